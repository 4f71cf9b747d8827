"""Step 7, explain: mutual-friend count and up to 3 mutual friends per recommendation; builds the list
that is cached and returned (external ids)."""

from __future__ import annotations

import numpy as np

from pymk.candidates.base import source_label
from pymk.ranking.explain import mutual_sample
from pymk.serving.request import Request


def run(req: Request, svc) -> None:
    r = req.ranked
    keep = req.keep
    cand = r.cand[:, keep]
    sample = mutual_sample(svc.model.graph, r.users, cand, np.array([keep.size], np.int64))[0]
    ids = svc.model.graph.ids
    req.recs = [
        [int(ids[cand[0, j]]), float(r.score[0, keep[j]]), int(r.mutual[0, keep[j]]),
         [int(ids[v]) for v in sample[j] if v >= 0], source_label(int(r.source[0, keep[j]]))]
        for j in range(keep.size)
    ]
