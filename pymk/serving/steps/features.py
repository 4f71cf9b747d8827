"""Step 4, feature fetch: the learned ranker's pair features, the user's and its candidates' stored rows
read in one round trip. Heuristic rankers read Stage 1's own features: nothing to fetch."""

from __future__ import annotations

from pymk.features.pairs import pair_features
from pymk.serving.request import Request


def run(req: Request, svc) -> None:
    ranker = svc.model.ranker
    if not hasattr(ranker, "predict"):
        return
    req.X, missing = pair_features(req.batch, ranker.graph, ranker.store)
    if bool(missing[0]):
        req.degrade("features")
    svc.take_store_degradation(req)
