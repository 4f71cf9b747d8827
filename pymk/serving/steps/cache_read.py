"""Step 2, cache: a cached list for this user and model version, deep enough for k, ends the pipeline."""

from __future__ import annotations

from pymk.serving.redis_link import RedisDown
from pymk.serving.request import Request


def run(req: Request, svc) -> None:
    try:
        recs = svc.cache.get(req.user_id)
    except RedisDown:
        req.degrade("cache")
        svc.metrics.cache.labels("unavailable").inc()
        return
    # a list shorter than k is complete only if it was cut by the candidates, not by the cache depth
    if recs is not None and (len(recs) >= req.k or len(recs) < svc.settings.cache_depth):
        req.recs = recs
        req.cached = True
        svc.metrics.cache.labels("hit").inc()
    else:
        svc.metrics.cache.labels("miss").inc()
