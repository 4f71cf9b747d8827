"""The request flow: a fixed, named sequence of steps, each timed and counted.

    sync -> eligibility -> cache -> stage1 -> features -> rank -> filter -> explain -> truncate -> cache_write

`sync` waits for the changes other workers acknowledged (`steps/sync.py`). A cache hit skips from `cache`
to `truncate`. Every step is one module of `pymk.serving.steps`.
"""

from __future__ import annotations

import time

from pymk.serving.request import Request
from pymk.serving.steps import (
    cache_read,
    cache_write,
    eligibility,
    explain,
    features,
    filter,
    rank,
    stage1,
    sync,
    truncate,
)

# (name, step, runs on a cache hit)
STEPS = (
    ("sync", sync.run, True),
    ("eligibility", eligibility.run, True),
    ("cache", cache_read.run, True),
    ("stage1", stage1.run, False),
    ("features", features.run, False),
    ("rank", rank.run, False),
    ("filter", filter.run, False),
    ("explain", explain.run, False),
    ("truncate", truncate.run, True),
    ("cache_write", cache_write.run, False),
)
STEP_NAMES = tuple(name for name, _, _ in STEPS)


def run_flow(req: Request, svc) -> Request:
    """Runs every step in order (timings in `req.timings` and the step histogram)."""
    for name, step, on_hit in STEPS:
        if req.cached and not on_hit:
            continue
        t0 = time.perf_counter()
        try:
            step(req, svc)
        finally:
            dt = time.perf_counter() - t0
            req.timings[name] = dt
            svc.metrics.step.labels(name).observe(dt)
    for source in req.degraded:
        svc.metrics.degraded.labels(source).inc()
    return req
