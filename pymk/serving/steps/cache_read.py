"""Step 2, cache: a cached list for this user and model version, deep enough for k, ends the pipeline."""

from __future__ import annotations

from pymk.serving.redis_link import RedisDown
from pymk.serving.request import Request


def run(req: Request, svc) -> None:
    try:
        if req.prefetched is not None:  # read in `sync`'s round trip
            recs, req.cache_token = req.prefetched
        else:
            recs, req.cache_token = svc.cache.get_with_token(req.user_id)
    except RedisDown:
        req.cache_token = -1  # no token: this request's list is not cached
        req.degrade("cache")
        svc.metrics.cache.labels("unavailable").inc()
        return
    # a list shorter than k is complete only if it was cut by the candidates, not by the cache depth
    gone = svc.model.graph.erased_ids if hasattr(svc.model.graph, "erased_ids") else ()
    if recs is not None and gone and any(r[0] in gone or any(v in gone for v in r[3]) for r in recs):
        recs = None  # lists made before an erasure never show the erased account
    hidden = getattr(svc.model.graph, "hidden_ids", ())
    if recs is not None and hidden and any(r[0] in hidden for r in recs):
        recs = None  # ... nor one who has since set itself undiscoverable
    if recs is not None and (len(recs) >= req.k or len(recs) < svc.settings.cache_depth):
        req.recs = recs
        req.cached = True
        svc.metrics.cache.labels("hit").inc()
    else:
        svc.metrics.cache.labels("miss").inc()
