"""Step 4, feature fetch: the learned ranker's pair features, the user's and its candidates' stored rows
read in one round trip. Heuristic rankers read Stage 1's own features: nothing to fetch."""

from __future__ import annotations

from pymk.serving import batch
from pymk.serving.request import Request


def run(req: Request, svc) -> None:
    req.X, missing = batch.features(svc.model, req.batch)
    if req.X is None:
        return
    if bool(missing[0]):
        req.degrade("features")
    svc.take_store_degradation(req)
