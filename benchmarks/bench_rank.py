"""Stage 2 latency: ranking one user's ~1,000 Stage-1 candidates (features + LightGBM), one core.

    NUMBA_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_rank [--edges PATH] [--users 200]

Builds a model with `ranker.kind = "lightgbm"` on the edge file (default: the bundled lastfm-asia), then
for random users times `ranker.rank(stage1_batch, 20)` one user at a time (Stage 1 not included),
beside the Adamic-Adar ranker on the same batches. Reports p50 / p99 milliseconds and the ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from pymk.config import PymkConfig
from pymk.pipeline.build import build
from pymk.pipeline.model import Model
from pymk.ranking import make_ranker


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--edges", type=Path, default=Path("tests/data/lastfm-asia.csv.gz"))
    ap.add_argument("--users", type=int, default=200)
    args = ap.parse_args()
    cfg = PymkConfig()
    cfg.ranker.kind = "lightgbm"
    with tempfile.TemporaryDirectory() as tmp:
        path = build(args.edges, Path(tmp) / "m", cfg, show_progress=False, log=lambda s: None)
        m = Model.load(path)
        aa = make_ranker("adamic_adar")
        rng = np.random.default_rng(0)
        users = rng.choice(m.graph.num_users, args.users, replace=False)
        batches = [m.candidates([u]) for u in users]
        m.ranker.rank(batches[0], 20)  # compile / warm
        times = {"lightgbm": [], "adamic_adar": []}
        for b in batches:
            for name, r in (("lightgbm", m.ranker), ("adamic_adar", aa)):
                t = time.perf_counter()
                r.rank(b, 20)
                times[name].append(time.perf_counter() - t)
        n_cand = np.mean([b.count[0] for b in batches])
        print(f"{args.edges.name}: {m.graph.num_users:,} users; {args.users} users one at a time, "
              f"{n_cand:.0f} candidates each; NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'all')}")
        for name, ts in times.items():
            p50, p99 = np.percentile(ts, 50) * 1e3, np.percentile(ts, 99) * 1e3
            print(f"  {name:<12} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
        print(f"  lightgbm / adamic_adar p50: {np.median(times['lightgbm']) / np.median(times['adamic_adar']):.1f}x")


if __name__ == "__main__":
    main()
