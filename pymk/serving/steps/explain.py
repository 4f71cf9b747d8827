"""Step 7, explain: mutual-friend count and up to 3 mutual friends per recommendation; builds the list
that is cached and returned (external ids)."""

from __future__ import annotations

from pymk.candidates.base import source_label
from pymk.serving import batch
from pymk.serving.request import Request


def run(req: Request, svc) -> None:
    a = batch.explain(svc.model, req.answer, view=req.batch.view)
    ids = svc.model.graph.ids
    req.recs = [
        [int(ids[a.cand[0, j]]), float(a.score[0, j]), int(a.mutual[0, j]),
         [int(ids[v]) for v in a.sample[0, j] if v >= 0], source_label(int(a.source[0, j]))]
        for j in range(int(a.count[0]))
    ]
