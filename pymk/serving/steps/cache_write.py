"""Step 9, cache write: the fresh list (up to the cache depth) under this model version."""

from __future__ import annotations

from pymk.serving.redis_link import RedisDown
from pymk.serving.request import Request


def run(req: Request, svc) -> None:
    # the embedded twins serve the same data, so only a list made without the user's actions (blocks,
    # dismissals in Redis) is unfit to keep
    if "actions" in req.degraded:
        return
    try:
        svc.cache.put(req.user_id, req.recs, req.cache_token)
    except RedisDown:
        req.degrade("cache")
