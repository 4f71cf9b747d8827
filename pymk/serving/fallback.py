"""A Redis-backed store with its embedded twin behind it: degraded mode for the stores a request reads.

`FallbackStore(primary, fallback, link, name)` answers every method call from `primary` through the
service's `RedisLink`; when Redis is down it answers from `fallback` (the model directory's in-process
store, which holds the same data) and counts the call in `degraded`, so the request flow can flag it.
"""

from __future__ import annotations

import threading

from pymk.serving.redis_link import RedisDown, RedisLink


class FallbackStore:
    def __init__(self, primary, fallback, link: RedisLink, name: str):
        self._primary = primary
        self._fallback = fallback
        self._link = link
        self.name = name
        self._local = threading.local()

    def take_degraded(self) -> bool:
        """Whether this thread's calls since the last take fell back (and reset)."""
        hit = getattr(self._local, "degraded", False)
        self._local.degraded = False
        return hit

    def __getattr__(self, attr):
        target = getattr(self._primary, attr)
        if not callable(target):
            return target

        def call(*args, **kwargs):
            try:
                return self._link.call(lambda _client: target(*args, **kwargs))
            except RedisDown:
                self._local.degraded = True
                return getattr(self._fallback, attr)(*args, **kwargs)

        return call
