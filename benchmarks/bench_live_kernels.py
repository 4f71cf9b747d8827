"""Stage-1 kernels on a plain snapshot and on snapshot + delta (1% of the edges rewritten in the delta):
friends-of-friends and PPR, batch (2,000 / 500 users) and one user per call (500 / 200), best of 3.

    .venv/bin/python -m benchmarks.bench_live_kernels [--graph /tmp/pymk-bench/synth-1000000-10] [--live]

Run it once per checkout to compare kernels across commits (e.g. `PYTHONPATH=<older worktree>` for the
baseline), on the same snapshot (`benchmarks/bench_fof.py`'s cache).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import pymk
from pymk.candidates.fof import friends_of_friends
from pymk.candidates.ppr import personalized_pagerank
from pymk.graph.snapshot import CSRGraph


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--graph", default="/tmp/pymk-bench/synth-1000000-10")
    ap.add_argument("--live", action="store_true", help="a LiveGraph with 1%% of the edges in its delta")
    args = ap.parse_args()
    g = CSRGraph.load(args.graph)
    if args.live:
        from pymk.graph.live import LiveGraph

        g = LiveGraph(g)
        lo, hi = g.snapshot.edge_pairs()
        sel = np.random.default_rng(9).random(lo.size) < 0.01
        g.apply(-1, lo[sel], hi[sel])
        g.apply(1, lo[sel], hi[sel])
    users = np.random.default_rng(0).choice(g.num_users, 2000, replace=False)
    for fn in (friends_of_friends, personalized_pagerank):  # compile outside the timing
        fn(g, users[:8], 100)
        fn(g, users[:1], 100)
    cases = [("fof_batch", lambda: friends_of_friends(g, users, 100)),
             ("fof_serial", lambda: [friends_of_friends(g, users[i:i + 1], 100) for i in range(500)]),
             ("ppr_batch", lambda: personalized_pagerank(g, users[:500], 100)),
             ("ppr_serial", lambda: [personalized_pagerank(g, users[i:i + 1], 100) for i in range(200)])]
    out = {}
    for name, fn in cases:
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        out[name] = round(best, 4)
    print(pymk.__file__, "live" if args.live else "snapshot", out)


if __name__ == "__main__":
    main()
