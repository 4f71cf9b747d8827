"""The daily update's ANN stage: N's index carried to N+1 in place vs a new index built, one run.

    .venv/bin/python -m benchmarks.bench_ann_update [--users 1000000] [--dim 64] [--kinds ivf_sq8,hnsw]
        [--new 0.005] [--erased 0.001] [--stale 0.05] [--queries 1000] [--k 100]

Version N: `bench_ann.embeddings` (clustered, low intrinsic dimension, like a GNN's output), indexed as
`pymk build` does (`AnnIndex.build`, calibrated to recall@100 >= 0.95 by nprobe / efSearch doubling).
A day: `--erased` of N's users leave, `--new` join with ids interleaved among the old ones (so every dense
index after the first new user shifts, as `pymk update` re-sorts by id), and `--stale` of the rest get new
vectors (the update's re-embedded users: a perturbation of their old vector). Then, side by side on the
same N+1 vectors: `in_place` (remove the erased, `relabel`, `replace` the stale and the new: what
`pymk update` runs) and `rebuild` (`AnnIndex.build`: training the IVF cells / building the HNSW graph),
each searched at N's calibrated parameter: wall time, and recall@k against exact search on N+1's vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from benchmarks.bench_ann import embeddings, exact_top, recall
from pymk.candidates.ann import AnnIndex, calibrate
from pymk.config import AnnConfig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--kinds", default="ivf_sq8,hnsw")
    ap.add_argument("--new", type=float, default=0.005)
    ap.add_argument("--erased", type=float, default=0.001)
    ap.add_argument("--stale", type=float, default=0.05)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--json")
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    n = args.users
    emb_all, _ = embeddings(n + int(n * args.new), args.dim)
    born = np.zeros(emb_all.shape[0], bool)
    born[rng.choice(emb_all.shape[0], emb_all.shape[0] - n, replace=False)] = True  # interleaved by id
    old_rows = np.flatnonzero(~born)  # N's users, in id order
    emb_n = np.ascontiguousarray(emb_all[old_rows])
    gone = np.zeros(n, bool)
    gone[rng.choice(n, int(n * args.erased), replace=False)] = True
    keep_rows = np.sort(np.concatenate([old_rows[~gone], np.flatnonzero(born)]))  # N+1's users, id order
    remap = np.full(n, -1, np.int64)
    remap[~gone] = np.searchsorted(keep_rows, old_rows[~gone])
    emb = np.ascontiguousarray(emb_all[keep_rows])
    fresh = np.isin(keep_rows, np.flatnonzero(born))
    stale = np.flatnonzero(~fresh)
    stale = rng.choice(stale, int(stale.size * args.stale), replace=False)
    emb[stale] += 0.3 * rng.normal(size=(stale.size, args.dim)).astype(np.float32) * np.linalg.norm(
        emb[stale], axis=1, keepdims=True) / np.sqrt(args.dim)
    fresh[stale] = True
    queries = rng.choice(emb.shape[0], args.queries, replace=False)
    truth = exact_top(emb, queries, args.k)
    report = {"machine": f"{platform.node()} {os.cpu_count()} cores", "users_n": n, "users_n1": int(emb.shape[0]),
              "dim": args.dim, "erased": int(gone.sum()), "new": int(born.sum()), "stale": int(stale.size),
              "k": args.k, "kinds": {}}
    for kind in args.kinds.split(","):
        cfg = AnnConfig(kind=kind)
        index = AnnIndex.build(emb_n, None, cfg, kind=kind)
        param = calibrate(index, emb_n, cfg)["param"]
        t = time.perf_counter()
        index.remove(np.flatnonzero(gone))
        index.relabel(remap)
        index.replace(np.flatnonzero(fresh), emb[fresh])
        t_in_place = time.perf_counter() - t
        index.set_search_param(param)
        r_in_place = recall(index, emb, queries, truth, args.k)
        del index
        t = time.perf_counter()
        rebuilt = AnnIndex.build(emb, None, cfg, kind=kind)
        t_rebuild = time.perf_counter() - t
        rebuilt.set_search_param(param)
        r_rebuild = recall(rebuilt, emb, queries, truth, args.k)
        del rebuilt
        report["kinds"][kind] = {
            "search_param": param, "in_place_s": round(t_in_place, 2), "rebuild_s": round(t_rebuild, 2),
            "in_place_over_rebuild": round(t_in_place / t_rebuild, 3),
            f"recall@{args.k}": {"in_place": round(r_in_place, 4), "rebuild": round(r_rebuild, 4)}}
        print(json.dumps({kind: report["kinds"][kind]}), flush=True)
    print(json.dumps(report, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
