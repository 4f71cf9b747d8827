"""Prometheus metrics of one app (its own registry, so several apps in one process do not collide).

With several worker processes (`pymk serve --workers N`) each worker counts in its own process, so
`/metrics` answered by one worker would show that worker's share only. When PROMETHEUS_MULTIPROC_DIR is
set (`pymk serve` sets a fresh one for N > 1), every worker writes its values to files there and
`/metrics` sums them over all workers, whichever worker answers; `pymk_redis_up` is then the minimum over
the live workers (0 while any of them sees Redis down).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as mp

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# 0.1 ms .. 2.5 s: cache hits live in the first buckets, full pipelines in the middle
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def multiprocess() -> bool:
    """Whether metrics are shared through files between worker processes."""
    return bool(os.environ.get(MULTIPROC_DIR_ENV))


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.request = Histogram("pymk_request_seconds", "request latency", ["endpoint", "cached"], registry=r,
                                 buckets=BUCKETS)
        self.step = Histogram("pymk_step_seconds", "time per request-flow step", ["step"], registry=r,
                              buckets=BUCKETS)
        self.cache = Counter("pymk_cache_requests", "recommendation cache lookups", ["result"], registry=r)
        self.candidates = Counter("pymk_candidates", "candidates entering / leaving a step", ["step", "direction"],
                                  registry=r)
        self.degraded = Counter("pymk_degraded_requests", "requests served without a store", ["source"], registry=r)
        self.embedding_tier = Counter("pymk_embedding_lookups", "embedding lookups by the tier that answered",
                                      ["tier"], registry=r)
        self.stream_events = Counter("pymk_stream_events", "edge events applied from the log", registry=r)
        self.stream_refreshed = Counter("pymk_stream_refreshed", "embeddings recomputed by the stream", registry=r)
        self.stream_graph_swaps = Counter("pymk_stream_graph_swaps", "live graph compacted and swapped in for "
                                          "Stage 1", registry=r)
        self.stream_lag = Histogram("pymk_stream_lag_seconds", "edge posted -> its embeddings refreshed", registry=r,
                                    buckets=BUCKETS + (5.0, 10.0, 30.0, 60.0))
        self.model_swaps = Counter("pymk_model_swaps", "published model versions swapped in (ok) or refused "
                                   "(failed)", ["result"], registry=r)
        self.auth = Counter("pymk_auth_refusals", "requests refused: 401 no valid key, 403 outside its scope, "
                            "429 over its rate limit", ["status"], registry=r)
        self.redis_up = Gauge("pymk_redis_up", "1 while the service's Redis answers", registry=r,
                              multiprocess_mode="livemin")

    def render(self) -> bytes:
        if multiprocess():
            merged = CollectorRegistry()
            mp.MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)

    def close(self) -> None:
        """This worker is leaving: its live gauges stop counting (its counters and histograms stay summed)."""
        if multiprocess():
            mp.mark_process_dead(os.getpid())
