"""Step 5, rank: score every candidate and keep the best `depth` (more than k, so filtering and the
cache still have enough)."""

from __future__ import annotations

from pymk.serving import batch
from pymk.serving.request import Request


def run(req: Request, svc) -> None:
    svc.metrics.candidates.labels("rank", "in").inc(int(req.batch.count[0]))
    req.ranked = batch.rank(svc.model, req.batch, req.X, req.depth)
