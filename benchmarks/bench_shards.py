"""Sharded vs unsharded friends-of-friends throughput, one run, on the same users.

    .venv/bin/python benchmarks/bench_shards.py [--users 1000000] [--avg-degree 50] [--shards 16]

Both compute top-100 Adamic-Adar for the same random users and must agree exactly. The sharded
engine (in-process shard store) groups users by home shard and, per batch, reads local lists and
fetches remote lists with one request per remote shard: the ratio is the price of that gathering
(in process; over a network each request adds a round trip). Also reports the partition time and the
locality of each method.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_fof import load_graph
from pymk.candidates.fof import friends_of_friends
from pymk.graph.locality import locality_report
from pymk.graph.partition import partition, plan_replicas
from pymk.graph.shard_store import InProcessShardStore
from pymk.graph.sharded import ShardedGraph


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--avg-degree", type=float, default=50)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--queries", type=int, default=4000)
    ap.add_argument("--cache", type=Path, default=Path("bench-data"))
    args = ap.parse_args()
    g = load_graph(args.users, args.avg_degree, args.cache)
    users = np.sort(np.random.default_rng(2).choice(g.num_users, args.queries, replace=False)).astype(np.int64)
    friends_of_friends(g, users[:8], 100)
    t = time.perf_counter()
    ref = friends_of_friends(g, users, 100)
    t_plain = time.perf_counter() - t
    print(f"graph {g.num_users:,} users, {g.num_edges:,} edges; {args.queries} users, top-100 AA; "
          f"{os.cpu_count()} cores")
    print(f"{'engine':<34}{'users/s':>10}{'vs unsharded':>14}{'remote req/batch':>18}{'locality':>10}")
    print(f"{'unsharded CSR':<34}{args.queries / t_plain:>10,.0f}{1.0:>13.2f}x{'-':>18}{'-':>10}")
    for method in ("hash", "community"):
        t = time.perf_counter()
        home = partition(g, args.shards, method)
        plan = plan_replicas(g, home, args.shards, method, 0.25)
        t_part = time.perf_counter() - t
        rep = locality_report(g, plan)
        sg = ShardedGraph(plan, InProcessShardStore(g, plan))
        friends_of_friends(sg, users[:8], 100)
        sg.remote_requests = sg.local_requests = 0
        t = time.perf_counter()
        res = friends_of_friends(sg, users, 100)
        t_sh = time.perf_counter() - t
        assert np.array_equal(res.cand, ref.cand) and np.array_equal(res.aa, ref.aa), "sharded != unsharded"
        batches = sum(-(-int(c) // sg.batch) for c in np.bincount(plan.home[users], minlength=args.shards) if c)
        name = f"{method} S={args.shards} (+replicas)"
        print(f"{name:<34}{args.queries / t_sh:>10,.0f}{t_plain / t_sh:>13.2f}x"
              f"{sg.remote_requests / batches:>18.1f}{rep.two_hop_locality:>10.3f}"
              f"   partition+plan {t_part:.1f}s")


if __name__ == "__main__":
    main()
