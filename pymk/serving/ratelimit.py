"""Rate limits per API key: a token bucket, in this process or shared by every worker through Redis.

Each caller (an API key's id; without keys, the client's address) has a bucket of `burst` tokens that
refills at `rate` per second; a request takes one, and a request that finds none is answered 429 with
`Retry-After` (whole seconds until a token is back). With Redis the bucket lives in one hash per caller
(`pymk:rl:<caller>`), updated by one Lua script against the server's clock, so N workers share one
limit; while Redis is down each worker falls back to its own bucket (a limit per worker, not none).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

from pymk.serving.redis_link import RedisDown

_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(b[1]), tonumber(b[2])
if tokens == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return tostring(wait)
"""


class LocalBuckets:
    """Token buckets in this process (at most `max_callers`, least recently seen dropped first)."""

    def __init__(self, rate: float, burst: int, max_callers: int = 100_000, clock=time.monotonic):
        self.rate, self.burst, self.max_callers, self.clock = rate, burst, max_callers, clock
        self._b: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, caller: str) -> float:
        """0 if the request may go ahead (a token taken), else the seconds until one is back."""
        now = self.clock()
        with self._lock:
            tokens, at = self._b.pop(caller, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._b[caller] = (tokens, now)
            if len(self._b) > self.max_callers:
                self._b.popitem(last=False)
            return wait


class RateLimiter:
    """Args: rate: tokens per second per caller (0: no limit); burst: bucket size (0: twice the rate)."""

    def __init__(self, rate: float, burst: int = 0):
        self.rate = rate
        self.burst = burst if burst > 0 else max(1, math.ceil(2 * rate))
        self.local = LocalBuckets(rate, self.burst)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, caller: str, link=None) -> float:
        """0 to go ahead, else seconds to wait (the request is refused). `link`: the serving version's
        `RedisLink` (None: this process's buckets)."""
        if not self.enabled:
            return 0.0
        if link is not None:
            try:
                return float(link.call(lambda c: c.eval(_TAKE, 1, f"pymk:rl:{caller}", self.rate, self.burst)))
            except RedisDown:
                pass
        return self.local.take(caller)

    @staticmethod
    def retry_after(wait: float) -> str:
        return str(max(1, math.ceil(wait)))
