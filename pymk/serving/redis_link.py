"""One Redis connection for the service, with a circuit breaker: Redis is never on the critical path.

Every Redis call of the service goes through `RedisLink.call`. A call that fails (unreachable, timed out,
refused) opens the breaker: for `retry_s` seconds no call reaches Redis and each one raises `RedisDown`
at once, so the embedded stores answer without waiting on timeouts. The next call after that is a
trial; when it succeeds the link is up again and the callbacks registered with `on_recover` run (they
flush what could not be written while Redis was away).
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("pymk.serving")


class RedisDown(RuntimeError):
    """Redis could not answer (or the breaker is open); the caller falls back to its embedded store."""


class RedisLink:
    """Args: client: a `redis.Redis`; retry_s: how long to skip Redis after a failure."""

    def __init__(self, client, *, retry_s: float = 1.0):
        import redis

        self.client = client
        self.retry_s = retry_s
        self._errors = (redis.RedisError, OSError)
        self._down_until = 0.0
        self._up = True
        self._lock = threading.Lock()
        self._recover = []
        self.failures = 0

    @classmethod
    def from_url(cls, url: str, *, timeout_ms: float = 50.0, retry_s: float = 1.0) -> RedisLink:
        import redis

        t = timeout_ms / 1000.0
        client = redis.Redis.from_url(url, socket_timeout=t, socket_connect_timeout=t, retry_on_timeout=False)
        return cls(client, retry_s=retry_s)

    def on_recover(self, fn) -> None:
        self._recover.append(fn)

    def call(self, fn):
        """`fn(client)`, or RedisDown when Redis fails or the breaker is open."""
        if not self._up and time.monotonic() < self._down_until:
            raise RedisDown("redis unavailable (retrying later)")
        try:
            out = fn(self.client)
        except self._errors as exc:
            with self._lock:
                self.failures += 1
                if self._up:
                    log.warning("redis unavailable, serving from embedded stores: %s", exc)
                self._up = False
                self._down_until = time.monotonic() + self.retry_s
            raise RedisDown(str(exc)) from exc
        if not self._up:
            with self._lock:  # one thread sees the recovery and replays what waited for it
                recovered = not self._up
                self._up = True
            if recovered:
                log.warning("redis is back")
                for cb in self._recover:
                    try:
                        cb()
                    except RedisDown:
                        break
        return out

    def ping(self) -> bool:
        try:
            return bool(self.call(lambda c: c.ping()))
        except RedisDown:
            return False
