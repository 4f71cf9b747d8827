"""pymk against CN / AA / RA on graph families it was never tuned on: does the method generalise?

    .venv/bin/python -m benchmarks.graph_families [--out DIR] [--only NAME ...]

Generates each graph with networkx (fixed seeds), writes it as an edge file under DIR and runs the
shared protocol (`pymk eval`'s `evaluate`, default config) on it; prints a markdown table for
docs/RESULTS.md. The families span what real social graphs mix: clustering with hubs (Holme-Kim),
planted communities with power-law degrees (LFR), pure geometry (random geometric), a ring lattice
with shortcuts (Watts-Strogatz), hubs without clustering (Barabasi-Albert), blocks without degree
skew (stochastic block model).
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path


def families() -> dict:
    import networkx as nx
    import numpy as np

    def sbm():
        p = np.full((40, 40), 0.0015)
        np.fill_diagonal(p, 0.06)
        return nx.stochastic_block_model([200] * 40, p.tolist(), seed=1)

    return {
        "holme_kim": lambda: nx.powerlaw_cluster_graph(8000, 4, 0.6, seed=1),
        "lfr": lambda: nx.LFR_benchmark_graph(6000, 2.5, 1.5, 0.2, average_degree=15, max_degree=300,
                                              min_community=30, max_community=400, seed=3),
        "geometric": lambda: nx.random_geometric_graph(8000, 0.025, seed=1),
        "watts_strogatz": lambda: nx.watts_strogatz_graph(8000, 12, 0.1, seed=1),
        "barabasi_albert": lambda: nx.barabasi_albert_graph(8000, 5, seed=1),
        "sbm": sbm,
    }


def write(g, path: Path) -> None:
    with gzip.open(path, "wt") as f:
        f.write("src,dst\n")
        f.writelines(f"{a},{b}\n" for a, b in g.edges())


def main() -> None:
    from pymk.eval.runner import evaluate
    from pymk.pipeline.build import ingest

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("bench-data/families"))
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print("| graph | users | edges | 2-hop ceiling | pymk serves | pymk R@20 | NDCG@10 | MRR | best heuristic R@20 "
          "| ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, make in families().items():
        if args.only and name not in args.only:
            continue
        path = args.out / f"{name}.csv.gz"
        if not path.exists():
            write(make(), path)
        edges, _ = ingest(path, show_progress=False, log=lambda s: None)
        r = evaluate(edges, dataset=name, log=lambda s: None)
        p, v = r.methods["pymk"], r.vs_best_heuristic
        print(f"| {name} | {edges.num_users:,} | {edges.lo.size:,} | {r.two_hop_ceiling:.4f} | {r.ranker['serving']} | "
              f"{p['recall@20']:.4f} | {p['ndcg@10']:.4f} | {p['mrr']:.4f} | {v['best']} {v['best_recall']:.4f} | "
              f"{v['ratio']:.3f}x |", flush=True)


if __name__ == "__main__":
    main()
