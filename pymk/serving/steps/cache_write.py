"""Step 9, cache write: the fresh list (up to the cache depth) under this model version."""

from __future__ import annotations

from pymk.serving.redis_link import RedisDown
from pymk.serving.request import Request


def run(req: Request, svc) -> None:
    if req.degraded:  # a list made without every store is not worth keeping
        return
    try:
        svc.cache.put(req.user_id, req.recs)
    except RedisDown:
        req.degrade("cache")
