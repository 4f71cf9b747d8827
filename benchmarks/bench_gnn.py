"""GNN training cost on the 1M-user synthetic graph: sampler speed, sampling share, memory.

    .venv/bin/python -m benchmarks.bench_gnn [--users 1000000] [--avg-degree 50] [--steps 60] [--devices cpu,cuda]

1. Sampler: B = 256 seeds, fan-outs [10, 10], pymk's numba sampler vs a plain per-node
   `numpy.random.choice` loop (same semantics: without replacement, de-duplicated nodes), one run.
2. Training: `--steps` GraphSAGE (128-d) link-prediction steps; per-step time, share spent sampling,
   nodes per batch, peak RSS of the process; once per device of `--devices` (default: the CPU).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_fof import load_graph
from pymk.gnn.config import GnnConfig
from pymk.gnn.sampler import NeighborSampler


def numpy_loop_sample(g, seeds, fanouts, rng):
    """The baseline: Python loop per node, numpy.random.choice per neighbour list."""
    local = {int(s): i for i, s in enumerate(seeds)}
    nodes = [int(s) for s in seeds]
    frontier = list(nodes)
    rows, cols = [], []
    for k in fanouts:
        nxt = []
        for x in frontier:
            nb = g.indices[g.indptr[x]:g.indptr[x + 1]]
            pick = nb if nb.size <= k else rng.choice(nb, k, replace=False)
            for y in pick.tolist():
                if y not in local:
                    local[y] = len(nodes)
                    nodes.append(y)
                    nxt.append(y)
                rows.append(local[y])
                cols.append(local[x])
        frontier = nxt
    return nodes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--avg-degree", type=float, default=50)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--cache", type=Path, default=Path("bench-data"))
    ap.add_argument("--devices", default="cpu", help="comma-separated gnn.device values, trained in turn")
    args = ap.parse_args()
    g = load_graph(args.users, args.avg_degree, args.cache)
    rng = np.random.default_rng(0)
    sampler = NeighborSampler(g, [10, 10])
    sampler.sample(rng.choice(g.num_users, 256, replace=False))
    n_batches = 100
    t = time.perf_counter()
    nodes = sum(sampler.sample(rng.choice(g.num_users, 256, replace=False), seed=i).node.size
                for i in range(n_batches))
    t_ours = time.perf_counter() - t
    n_base = 10
    t = time.perf_counter()
    base_nodes = sum(len(numpy_loop_sample(g, rng.choice(g.num_users, 256, replace=False), [10, 10], rng))
                     for _ in range(n_base))
    t_base = time.perf_counter() - t
    print(f"graph {g.num_users:,} users, {g.num_edges:,} edges; B = 256, fan-outs [10, 10] "
          f"(bound {sampler.max_nodes(256):,} nodes)")
    print(f"  numba sampler:            {nodes / n_batches:>9,.0f} nodes/batch  {nodes / t_ours:>12,.0f} nodes/s  "
          f"{n_batches / t_ours:>7.1f} batches/s")
    print(f"  numpy.random.choice loop: {base_nodes / n_base:>9,.0f} nodes/batch  {base_nodes / t_base:>12,.0f} "
          f"nodes/s  {n_base / t_base:>7.1f} batches/s   -> numba {(nodes / t_ours) / (base_nodes / t_base):.1f}x")

    from pymk.gnn.train import Trainer

    for device in args.devices.split(","):
        cfg = GnnConfig(dim=128, epochs=1, max_steps_per_epoch=args.steps, val_fraction=0.001, device=device)
        t = time.perf_counter()
        trainer = Trainer(g, cfg)
        setup = time.perf_counter() - t
        trainer.validate = lambda *a, **k: 0.0  # time the training steps only
        res = trainer.fit(progress=False, log=lambda s: None)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"training on {device}: {res.steps} steps of GraphSAGE 128-d: "
              f"{res.step_seconds / res.steps * 1e3:.0f} ms/step, "
              f"sampling {res.sample_seconds / res.step_seconds:.1%} of step time, "
              f"{res.sampled_nodes / res.steps:,.0f} nodes/batch (max {res.max_batch_nodes:,}), "
              f"{res.sampled_nodes / res.sample_seconds:,.0f} sampled nodes/s; setup {setup:.1f}s; "
              f"peak RSS {rss:.2f} GB", flush=True)
        del trainer


if __name__ == "__main__":
    main()
