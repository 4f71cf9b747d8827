"""Reading an edge file whole in one process against in chunks on Ray tasks (`pymk.graph.chunked`), side by side.

    .venv/bin/python -m benchmarks.bench_chunked_ingest [--users 1000000] [--avg-degree 20] [--repeats 3]
        [--chunk-mb 64] [--cache /tmp/pymk-bench]

On `pymk synth --users N --avg-degree D --seed 0` written as CSV and as Parquet (row groups of 1M rows), each
reader alternately `--repeats` times on a local Ray cluster of this machine's CPUs: the sequential reader
(`read_edges`, the local executor's path) and the chunked one (`read_edges_chunked` on a `RayExecutor`, the
Ray executor's path in `pymk build`). Medians, their ratio, and a check that both read the same rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def main():
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from pymk.graph.chunked import read_edges_chunked
    from pymk.graph.ingest import read_edges
    from pymk.graph.synth import SynthConfig, generate, write_edges
    from pymk.pipeline.executor import RayExecutor

    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--avg-degree", type=float, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk-mb", type=float, default=64)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/pymk-bench"))
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    csv = args.cache / f"edges-{args.users}-{args.avg_degree:g}.csv"
    parquet = csv.with_suffix(".parquet")
    if not csv.exists():
        src, dst, ts = generate(SynthConfig(args.users, args.avg_degree, seed=0))
        write_edges(csv, src, dst, ts)
        pq.write_table(pa.table({"src": src, "dst": dst, "ts": ts}), parquet, row_group_size=1 << 20)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ex = RayExecutor()
    ex.map(lambda _, x: x, [0, 1])  # workers started before the clock runs
    out = {"machine": f"{platform.node()}, {os.cpu_count()} cpus", "users": args.users, "files": {}}
    for path in (csv, parquet):
        times = {"sequential": [], "chunked (ray)": []}
        same = True
        for _ in range(args.repeats):
            t = time.perf_counter()
            a = read_edges(path)
            times["sequential"].append(time.perf_counter() - t)
            t = time.perf_counter()
            b = read_edges_chunked(path, ex, chunk_bytes=int(args.chunk_mb * (1 << 20)))
            times["chunked (ray)"].append(time.perf_counter() - t)
            same &= np.array_equal(a.src, b.src) and np.array_equal(a.dst, b.dst) and np.array_equal(a.ts, b.ts)
            del a, b
        med = {k: float(np.median(v)) for k, v in times.items()}
        out["files"][path.name] = {"bytes": path.stat().st_size, "median_s": med, "same_rows": bool(same),
                                   "chunked_over_sequential": med["chunked (ray)"] / med["sequential"]}
        print(f"{path.name} ({path.stat().st_size / 2**20:.0f} MB): sequential {med['sequential']:.2f} s, "
              f"chunked on ray {med['chunked (ray)']:.2f} s ({med['chunked (ray)'] / med['sequential']:.2f}x), "
              f"same rows: {same}", flush=True)
    print(json.dumps(out))
    ray.shutdown()


if __name__ == "__main__":
    main()
