"""How much of the 2-hop ceiling any re-ordering of Stage 1's candidates can keep in 1,000 (issue 20).

    .venv/bin/python -m benchmarks.stage1_bound --edges PATH [--pool 4000] [--objective lambdarank] [--json OUT]

Under the shared protocol (train split only), builds the default pipeline with Stage 1 asked for `--pool`
candidates (so its learned ranker is trained on, and scores, lists that deep), then reports, micro-averaged
over the evaluation users' test edges as `pymk eval` does:

    ceiling      the 2-hop ceiling (every 2-hop non-friend a candidate)
    stage1@1000  the pool's first 1,000 (Stage 1's own order; the default k = 1000 differs a little: PPR's
                 quota is a share of k)
    pool         what the deeper list holds
    ranked@1000  what the learned ranker's top 1,000 of the pool holds: every pair feature pymk has (paths3,
                 PPR, ridge, ranks, degrees, sources, ...) with a model trained for this graph

A light first-pass scorer inside Stage 1 (issue 20, item 1) orders candidates with a subset of those
features, so `ranked@1000` is what such a scorer could hope for given pymk's signals; the gap between it and
the ceiling is what no ordering of these signals recovers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from pymk.candidates.fof import two_hop_coverage
from pymk.config import PymkConfig
from pymk.eval.metrics import hit_matrix, micro_recall
from pymk.eval.protocol import split_edges
from pymk.graph.snapshot import CSRGraph
from pymk.pipeline.build import build_from_edges, ingest
from pymk.pipeline.model import Model

KEEP = 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--edges", required=True)
    ap.add_argument("--pool", type=int, default=4000, help="Stage-1 candidates the ranker re-orders")
    ap.add_argument("--objective", default="lambdarank", help="ranker.objective: lambdarank | binary | auto")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    edges, _ = ingest(args.edges, show_progress=False, log=lambda s: None)
    split = split_edges(edges)
    n = edges.num_users
    users, n_truth = split.users, np.diff(split.truth_ptr)

    def recall(lists):
        return micro_recall(hit_matrix(lists, users.size, split.truth_ptr, split.truth_idx, n), n_truth)

    train = CSRGraph.from_edges(split.train)
    ceil_hits, _ = two_hop_coverage(train, users, split.truth_ptr, split.truth_idx)
    cfg = PymkConfig()
    cfg.candidates.k = args.pool
    cfg.ranker.objective = args.objective
    out = {"edges": str(args.edges), "users": int(users.size), "pool": args.pool, "objective": args.objective,
           "ceiling": float(ceil_hits.sum() / max(1, n_truth.sum()))}
    with tempfile.TemporaryDirectory(prefix="pymk-bound-") as tmp:
        t = time.perf_counter()
        build_from_edges(split.train, Path(tmp) / "model", cfg, log=lambda s: None)
        out["build_s"] = round(time.perf_counter() - t, 1)
        model = Model.load(Path(tmp) / "model")
        out["ranker"] = model.ranker_kind
        pool = model.candidates(users, k=args.pool).cand
        out[f"stage1@{KEEP}"] = recall(pool[:, :KEEP])
        out["pool"] = recall(pool)
        t = time.perf_counter()
        out[f"ranked@{KEEP}"] = recall(model.recommend(users, KEEP).cand)
        out["rank_ms_per_user"] = round((time.perf_counter() - t) / users.size * 1e3, 2)
    print(f"{args.edges}: {n:,} users; ranker {out['ranker']} ({args.objective}), pool {args.pool}")
    for key in ("ceiling", f"stage1@{KEEP}", "pool", f"ranked@{KEEP}"):
        print(f"  {key:<14}{out[key]:.4f}")
    print(f"  build {out['build_s']} s, Stage 1 + ranking of the pool {out['rank_ms_per_user']} ms a user")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
