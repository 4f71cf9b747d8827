"""The offline pipeline's executors side by side: the ranker's training lists (Stage 1 + pair features per
256-user chunk, `ranker.splits` internal splits) computed by the local executor and by Ray tasks.

    .venv/bin/python -m benchmarks.bench_pipeline [--users 200000] [--avg-degree 20] [--train-users 3000]
        [--ray-address ADDR] [--cache /tmp/pymk-bench] [--json OUT]

Graph: `pymk synth --users N --avg-degree D --seed 0` (cached). The two executors run alternately twice;
the report gives each one's median wall time and checks the lists are equal. Without `--ray-address` Ray
starts a local cluster on this machine's cores (so the comparison here says what Ray's task overhead
costs; the gain needs more machines).
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
from pymk.config import PymkConfig
from pymk.pipeline.executor import LocalExecutor, RayExecutor
from pymk.ranking.learned import training_data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--avg-degree", type=float, default=20)
    ap.add_argument("--train-users", type=int, default=3000)
    ap.add_argument("--ray-address")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/pymk-bench"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    g = load_graph(args.users, args.avg_degree, args.cache)
    cfg = PymkConfig()
    cfg.ranker.train_users = args.train_users
    executors = {"local": LocalExecutor(), "ray": RayExecutor(args.ray_address)}
    times: dict[str, list] = {k: [] for k in executors}
    out = {}
    for _ in range(2):
        for name, ex in executors.items():
            t = time.perf_counter()
            out[name] = training_data(g, cfg, log=lambda s: None, executor=ex)
            times[name].append(time.perf_counter() - t)
    equal = all(np.array_equal(out["local"][k], out["ray"][k], equal_nan=True) for k in ("X", "y", "group", "users"))
    report = {"machine": f"{platform.node()} {os.cpu_count()} cores", "users": args.users,
              "avg_degree": args.avg_degree, "train_users_per_split": args.train_users, "splits": cfg.ranker.splits,
              "rows": int(out["local"]["y"].size), "equal": equal, "ray": executors["ray"].describe(),
              "seconds": {k: round(float(np.median(v)), 2) for k, v in times.items()}}
    report["ray_over_local"] = round(report["seconds"]["ray"] / report["seconds"]["local"], 2)
    print(json.dumps(report, indent=1))
    executors["ray"].close()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
