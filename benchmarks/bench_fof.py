"""Friends-of-friends top-100 for random users: pymk's numba kernel vs scipy sparse vs networkx.

    .venv/bin/python benchmarks/bench_fof.py [--users 1000000] [--avg-degree 50] [--queries 2000]

All three compute Adamic-Adar over 2-hop non-friends and keep the top 100 per user; the script checks
that they agree. scipy: `A[rows] @ (W A)` in row blocks, then a per-row exclusion and argpartition.
networkx: a Counter-style dict over neighbours' neighbours (on a subsample of the query users, since it
is ~100x slower; rates are per user). The synthetic graph is cached under bench-data/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from pymk.candidates.fof import friends_of_friends
from pymk.graph.edges import normalize_edges
from pymk.graph.ingest import RawEdges
from pymk.graph.snapshot import CSRGraph
from pymk.graph.synth import SynthConfig, generate

K = 100


def load_graph(users: int, avg_degree: float, cache: Path) -> CSRGraph:
    snap = cache / f"synth-{users}-{avg_degree:g}"
    if (snap / "meta.json").exists():
        return CSRGraph.load(snap)
    src, dst, ts = generate(SynthConfig(users, avg_degree, seed=0))
    edges, _ = normalize_edges(RawEdges(src, dst, ts, "synth", src.size))
    g = CSRGraph.from_edges(edges, meta={"source": f"pymk synth --users {users} --avg-degree {avg_degree}"})
    g.save(snap)
    return CSRGraph.load(snap)


def paths_of(g: CSRGraph, users: np.ndarray) -> int:
    """2-hop path expansions u -> v -> c the kernels walk (sum of friends' degrees)."""
    deg = g.degree
    return int(sum(deg[g.neighbors(u)].sum() for u in users))


def run_pymk(g, users, threads):
    import numba

    numba.set_num_threads(threads)
    friends_of_friends(g, users[:4], K)  # compile outside the timing
    t = time.perf_counter()
    res = friends_of_friends(g, users, K, score="aa")
    return time.perf_counter() - t, res


def run_scipy(g, users, block=100):
    n = g.num_users
    a = sp.csr_matrix((np.ones(g.indices.size, np.float64), np.asarray(g.indices), np.asarray(g.indptr)),
                      shape=(n, n))
    deg = np.asarray(g.degree, np.float64)
    w = np.where(deg > 1, 1.0 / np.log(np.maximum(deg, 2)), 0.0)
    aw = sp.diags(w) @ a  # row v scaled by 1/log deg(v)
    out = np.full((users.size, K), -1, np.int64)
    t = time.perf_counter()
    for s in range(0, users.size, block):
        rows = users[s:s + block]
        p = (a[rows] @ aw).tocsr()
        for i, u in enumerate(rows):
            cols = p.indices[p.indptr[i]:p.indptr[i + 1]]
            vals = p.data[p.indptr[i]:p.indptr[i + 1]]
            keep = ~np.isin(cols, g.neighbors(u)) & (cols != u)
            cols, vals = cols[keep], vals[keep]
            if cols.size > K:
                top = np.argpartition(-vals, K - 1)[:K]
                cols, vals = cols[top], vals[top]
            order = np.lexsort((cols, -vals))
            out[s + i, : cols.size] = cols[order]
    return time.perf_counter() - t, out


def run_networkx(g, users):
    import networkx as nx

    t0 = time.perf_counter()
    hop1 = np.unique(np.concatenate([g.neighbors(u) for u in users] + [users]))
    G = nx.Graph()
    for v in hop1:
        G.add_edges_from((int(v), int(c)) for c in g.neighbors(v))
    build = time.perf_counter() - t0
    out = []
    t = time.perf_counter()
    for u in users.tolist():
        friends = G[u]
        scores = defaultdict(float)
        for v in friends:
            w = 1.0 / np.log(G.degree(v)) if G.degree(v) > 1 else 0.0
            for c in G[v]:
                if c != u and c not in friends:
                    scores[c] += w
        out.append(sorted(scores, key=lambda c: (-scores[c], c))[:K])
    return time.perf_counter() - t, out, build


def agreement(a_rows, b_rows) -> float:
    """Mean Jaccard of the top-K sets (ties at the K-th score may differ between exact methods)."""
    j = []
    for a, b in zip(a_rows, b_rows, strict=True):
        a, b = {x for x in a if x >= 0}, {x for x in b if x >= 0}
        j.append(len(a & b) / max(1, len(a | b)))
    return float(np.mean(j))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--avg-degree", type=float, default=50)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--nx-queries", type=int, default=500)
    ap.add_argument("--cache", type=Path, default=Path("bench-data"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    g = load_graph(args.users, args.avg_degree, args.cache)
    rng = np.random.default_rng(1)
    users = np.sort(rng.choice(g.num_users, args.queries, replace=False)).astype(np.int64)
    nx_users = users[: args.nx_queries]
    paths = paths_of(g, users)
    paths_nx = paths_of(g, nx_users)
    threads = os.cpu_count() or 1

    t_p1, res1 = run_pymk(g, users, 1)
    t_pn, _ = run_pymk(g, users, threads)
    t_sp, sp_out = run_scipy(g, users)
    t_nx, nx_out, nx_build = run_networkx(g, nx_users)

    rows = {
        "pymk (numba, 1 thread)": (args.queries, t_p1, paths),
        f"pymk (numba, {threads} threads)": (args.queries, t_pn, paths),
        "scipy sparse (A[rows] @ WA, 1 thread)": (args.queries, t_sp, paths),
        "networkx (dict over neighbours' neighbours)": (args.nx_queries, t_nx, paths_nx),
    }
    base_sp = args.queries / t_sp
    base_nx = args.nx_queries / t_nx
    result = {
        "graph": {"users": g.num_users, "edges": g.num_edges, "max_degree": int(g.degree.max())},
        "queries": args.queries, "k": K, "paths_per_query": paths / args.queries,
        "machine": f"{platform.processor() or platform.machine()}, {threads} cores, {platform.python_version()}",
        "methods": {},
        "agreement_top100_jaccard": {
            "scipy vs pymk": agreement(sp_out, res1.cand),
            "networkx vs pymk": agreement(nx_out, res1.cand[: args.nx_queries]),
        },
        "networkx_graph_build_s": round(nx_build, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
    }
    print(f"graph: {g.num_users:,} users, {g.num_edges:,} edges; {args.queries} queries, top-{K} Adamic-Adar; "
          f"{paths / args.queries:,.0f} 2-hop paths per query")
    print(f"{'method':<46}{'users/s':>12}{'paths/s':>14}{'vs scipy':>10}{'vs networkx':>13}")
    for name, (q, t, p) in rows.items():
        ups = q / t
        result["methods"][name] = {"users_per_s": ups, "paths_per_s": p / t, "seconds": t, "queries": q,
                                   "vs_scipy": ups / base_sp, "vs_networkx": ups / base_nx}
        print(f"{name:<46}{ups:>12,.0f}{p / t:>14,.0f}{ups / base_sp:>9.1f}x{ups / base_nx:>12.1f}x")
    print("agreement (mean Jaccard of top-100 sets):", result["agreement_top100_jaccard"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
