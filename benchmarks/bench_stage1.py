"""Stage 1 per request on one core: the default candidate generation (friends-of-friends by AA, PPR,
popularity fill; k = 1,000) for one user at a time, as the service runs it, and each source alone.

    NUMBA_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_stage1 [--users 1000000] [--avg-degree 50]
        [--requests 2000] [--json out.json]

The synthetic graph is the one `bench_fof.py` caches under bench-data/. Every request is timed on its own
(the first few compile and warm the workspaces and are left out); latencies are p50 / p99 / mean.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_fof import load_graph
from pymk.candidates.stage1 import Stage1
from pymk.config import CandidatesConfig

WARMUP = 20


def time_requests(stage1: Stage1, users: np.ndarray, k: int, sources) -> np.ndarray:
    """Milliseconds of each single-user `generate` call."""
    for u in users[:WARMUP]:
        stage1.generate(np.array([u]), k=k, sources=sources)
    out = np.empty(users.size)
    for i, u in enumerate(users.tolist()):
        t = time.perf_counter()
        stage1.generate(np.array([u]), k=k, sources=sources)
        out[i] = (time.perf_counter() - t) * 1e3
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--avg-degree", type=float, default=50)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--cache", type=Path, default=Path("bench-data"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    g = load_graph(args.users, args.avg_degree, args.cache)
    config = CandidatesConfig()
    stage1 = Stage1(g, config)
    rng = np.random.default_rng(2)
    users = rng.choice(g.num_users, args.requests + WARMUP, replace=False).astype(np.int64)
    deg = np.asarray(g.degree)
    paths = float(np.mean([deg[g.neighbors(u)].sum() for u in users[WARMUP:]]))
    threads = os.environ.get("NUMBA_NUM_THREADS", "all")
    result = {"graph": {"users": g.num_users, "edges": g.num_edges, "paths_per_request": paths},
              "k": args.k, "requests": args.requests, "numba_threads": threads,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "rows": {}}
    print(f"graph: {g.num_users:,} users, {g.num_edges:,} edges; {paths:,.0f} 2-hop paths per request; "
          f"k = {args.k}; numba threads: {threads}")
    print(f"{'what':<34}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
    for name, sources in (("stage 1 (default sources)", None), ("friends-of-friends alone", ("fof",)),
                          ("ppr alone", ("ppr",))):
        ms = time_requests(stage1, users, args.k, sources)
        row = {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean())}
        result["rows"][name] = row
        print(f"{name:<34}{row['p50']:>9.2f}{row['p99']:>9.2f}{row['mean']:>9.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
