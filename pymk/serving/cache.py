"""Cached recommendations per user: an in-process LRU (embedded default) or Redis (the L2 cache).

An entry is the ranked, filtered, explained list of one user (up to `cache_depth` items) for one model
version. Both caches behave the same:
    - versioned: an entry written by another model version is never served (Redis keys carry the
      version, `pymk:rec:{version}:{user}`; the LRU compares it);
    - TTL: entries expire after `ttl_s`;
    - `invalidate(users)`: new friendships, blocks and dismissals drop the users' entries;
    - tokens: `get_with_token(user)` also returns the user's invalidation count, and `put(user, recs, token)`
      writes only if no invalidation came since; a request that started before a block, friendship or
      erasure therefore never caches the list it computed from the old state (in Redis: a Lua
      compare-and-set on `pymk:recver:{user}`, so across every worker).
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
        self._ver: dict[int, int] = {}  # invalidations per user (the write tokens)
        self._lock = threading.Lock()

    def get_with_token(self, user: int) -> tuple[list | None, int]:
        with self._lock:
            token = self._ver.get(user, 0)
        return self.get(user), token

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

    def put(self, user: int, recs: list, token: int | None = None) -> None:
        if self.size == 0:
            return
        with self._lock:
            if token is not None and self._ver.get(user, 0) != token:
                return  # invalidated while the list was made: it is stale
            self._d[user] = (self.version, time.monotonic() + self.ttl_s, recs)
            self._d.move_to_end(user)
            while len(self._d) > self.size:
                self._d.popitem(last=False)

    def invalidate(self, users) -> None:
        with self._lock:
            for u in users:
                u = int(u)
                self._d.pop(u, None)
                self._ver[u] = self._ver.get(u, 0) + 1

    invalidate_local = invalidate

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

    _PUT = """if (redis.call('GET', KEYS[2]) or '0') == ARGV[2] then
  return redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3]) else return 0 end"""

    def key(self, user: int) -> str:
        return f"{self.prefix}:{self.version}:{user}"

    def ver_key(self, user: int) -> str:
        return f"pymk:recver:{user}"

    def get_with_token(self, user: int) -> tuple[list | None, int]:
        """The cached list and the user's invalidation count, in one round trip."""
        if self._pending and user in self._pending:
            self.flush()
            if user in self._pending:
                return None, -1
        return self._read(user)[1]

    def get_after(self, user: int, first) -> tuple[object, tuple[list | None, int] | None]:
        """`first(pipe)`'s reads, then the cached list and token, in one MULTI/EXEC round trip (so nothing
        another client writes falls between them). The list part is None for a user with a pending
        invalidation (read it again through `get_with_token`)."""
        head, entry = self._read(user, first)
        return head, (None if self._pending and user in self._pending else entry)

    def _read(self, user: int, first=None) -> tuple[list, tuple[list | None, int]]:
        """One round trip: `first(pipe)`'s replies (a MULTI/EXEC with them), then the user's list and token."""
        def read(c):
            pipe = c.pipeline(transaction=first is not None)
            if first is not None:
                first(pipe)
            pipe.get(self.key(user))
            pipe.get(self.ver_key(user))
            return pipe.execute()

        *head, raw, ver = self.link.call(read)
        return head, ((None if raw is None else orjson.loads(raw)), int(ver or 0))

    def get(self, user: int) -> list | None:
        if self._pending and user in self._pending:
            self.flush()  # raises RedisDown while Redis is still away
            if user in self._pending:
                return None
        raw = self.link.call(lambda c: c.get(self.key(user)))
        return None if raw is None else orjson.loads(raw)

    def put(self, user: int, recs: list, token: int | None = None) -> None:
        payload = orjson.dumps(recs)
        if token is None:
            self.link.call(lambda c: c.set(self.key(user), payload, ex=self.ttl_s))
        elif token >= 0:
            self.link.call(lambda c: c.eval(self._PUT, 2, self.key(user), self.ver_key(user), payload, str(token),
                                            str(self.ttl_s)))

    def invalidate(self, users) -> None:
        users = [int(u) for u in users]
        with self._lock:
            self._pending.update(users)
        self.flush()

    def invalidate_local(self, users) -> None:
        """Another worker's change: it dropped the shared entries already; nothing is held here."""

    def flush(self) -> None:
        """Replays pending invalidations (one pipeline: INCR the tokens, DEL the entries)."""
        with self._lock:
            todo = list(self._pending)
        if not todo:
            return
        def drop(c):
            pipe = c.pipeline(transaction=False)
            for u in todo:
                pipe.incr(self.ver_key(u))  # before the delete: a write racing it fails its token check
            pipe.delete(*[self.key(u) for u in todo])
            pipe.execute()

        self.link.call(drop)
        with self._lock:
            self._pending.difference_update(todo)


def make_cache(version: str, settings, link: RedisLink | None):
    """Redis when the service has a Redis link, else the in-process LRU."""
    if link is not None:
        return RedisCache(link, version, ttl_s=settings.cache_ttl_s)
    return LocalCache(version, size=settings.cache_size, ttl_s=settings.cache_ttl_s)

