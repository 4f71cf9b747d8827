"""Step 5, rank: score every candidate and keep the best `depth` (more than k, so filtering and the
cache still have enough)."""

from __future__ import annotations

from pymk.serving.request import Request


def run(req: Request, svc) -> None:
    ranker = svc.model.ranker
    scores = ranker.predict(req.batch, req.X) if req.X is not None else None
    svc.metrics.candidates.labels("rank", "in").inc(int(req.batch.count[0]))
    req.ranked = ranker.rank(req.batch, req.depth, scores=scores)
