"""Step 6, filter: never the user, a friend (in the graph or added since), a blocked or dismissed user,
an erased account.

Stage 1 already excluded them; this is the guarantee at the end of the pipeline, whatever a source or
ranker did."""

from __future__ import annotations

from pymk.serving import batch
from pymk.serving.request import Request


def run(req: Request, svc) -> None:
    req.answer = batch.filter(svc.model, req.ranked, [req.excluded], view=req.batch.view)
    svc.metrics.candidates.labels("filter", "in").inc(int(req.ranked.count[0]))
    svc.metrics.candidates.labels("filter", "out").inc(int(req.answer.count[0]))
