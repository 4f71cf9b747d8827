"""Cached recommendations per user: an in-process LRU (embedded default) or Redis (the L2 cache).

An entry is the ranked, filtered, explained list of one user (up to `cache_depth` items) for one model
version. Both caches behave the same:
    - versioned: an entry written by another model version is never served (Redis keys carry the
      version, `pymk:rec:{version}:{user}`; the LRU compares it);
    - TTL: entries expire after `ttl_s`;
    - `invalidate(users)`: new friendships, blocks and dismissals drop the users' entries.
Redis failures raise `RedisDown` to the caller (the request flow then serves uncached). Invalidations
that could not reach Redis are kept and replayed when it recovers; until then those users are misses.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import orjson

from pymk.serving.redis_link import RedisLink


class LocalCache:
    """LRU of at most `size` users (0: caching off). Thread-safe."""

    kind = "local"

    def __init__(self, version: str, *, size: int = 100_000, ttl_s: float = 900):
        self.version = version
        self.size = size
        self.ttl_s = ttl_s
        self._d: OrderedDict[int, tuple[str, float, list]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, user: int) -> list | None:
        with self._lock:
            hit = self._d.get(user)
            if hit is None:
                return None
            version, expires, recs = hit
            if version != self.version or expires < time.monotonic():
                del self._d[user]
                return None
            self._d.move_to_end(user)
            return recs

    def put(self, user: int, recs: list) -> None:
        if self.size == 0:
            return
        with self._lock:
            self._d[user] = (self.version, time.monotonic() + self.ttl_s, recs)
            self._d.move_to_end(user)
            while len(self._d) > self.size:
                self._d.popitem(last=False)

    def invalidate(self, users) -> None:
        with self._lock:
            for u in users:
                self._d.pop(int(u), None)

    def __len__(self) -> int:
        return len(self._d)


class RedisCache:
    """The same behaviour in Redis: `SET key json EX ttl`, `GET`, `DEL`, through a `RedisLink`."""

    kind = "redis"

    def __init__(self, link: RedisLink, version: str, *, ttl_s: int = 900, prefix: str = "pymk:rec"):
        self.link = link
        self.version = version
        self.ttl_s = int(ttl_s)
        self.prefix = prefix
        self._pending: set[int] = set()  # invalidations Redis has not seen yet
        self._lock = threading.Lock()
        link.on_recover(self.flush)

    def key(self, user: int) -> str:
        return f"{self.prefix}:{self.version}:{user}"

    def get(self, user: int) -> list | None:
        if self._pending and user in self._pending:
            self.flush()  # raises RedisDown while Redis is still away
            if user in self._pending:
                return None
        raw = self.link.call(lambda c: c.get(self.key(user)))
        return None if raw is None else orjson.loads(raw)

    def put(self, user: int, recs: list) -> None:
        payload = orjson.dumps(recs)
        self.link.call(lambda c: c.set(self.key(user), payload, ex=self.ttl_s))

    def invalidate(self, users) -> None:
        users = [int(u) for u in users]
        with self._lock:
            self._pending.update(users)
        self.flush()

    def flush(self) -> None:
        """Replays pending invalidations (one pipelined DEL)."""
        with self._lock:
            todo = list(self._pending)
        if not todo:
            return
        keys = [self.key(u) for u in todo]
        self.link.call(lambda c: c.delete(*keys))
        with self._lock:
            self._pending.difference_update(todo)


def make_cache(version: str, settings, link: RedisLink | None):
    """Redis when the service has a Redis link, else the in-process LRU."""
    if link is not None:
        return RedisCache(link, version, ttl_s=settings.cache_ttl_s)
    return LocalCache(version, size=settings.cache_size, ttl_s=settings.cache_ttl_s)

