"""ANN retrieval: single vs sharded index, at recall@100 >= 0.95 against exact search, one run.

    .venv/bin/python -m benchmarks.bench_ann [--users 1000000] [--dim 128] [--shards 4] [--kinds ivf_sq8,hnsw]

Embeddings: learned embeddings have a low intrinsic dimension, so these are clustered points in a
16-d latent space (within-cluster noise `--noise`) mapped linearly to 128-d plus a little isotropic
noise, with log-normal norms (`--norm-spread` 0.1: max / median ~1.8 at 1M; pymk's GNN embeddings of
lastfm-asia and ego-facebook have 1.4 and 1.25, and HNSW's inner-product lift degrades as it grows).
At 100K users IVF needs ~5% of its cells and HNSW efSearch ~256 for recall@100 0.95 (pymk's lastfm
GNN embeddings: 9% and 64 for 0.97); isotropic 128-d clusters would need half the cells and defeat
HNSW (efSearch 4096: recall 0.47), well-separated ones 2 cells in 4,000 - neither looks like a model's
output. Shard = cluster mod S (a community lives on one shard, as with a graph partition).
For each kind: build the single index, raise its search parameter (nprobe / efSearch, doubling) until
recall@100 of the benchmark queries reaches the target, then build the sharded index and search it
at the same parameter. Reports recall, batch throughput (queries/s over all cores and per core),
single-query latency p50 / p99, build time and memory, and the sharded / single ratios.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

from pymk.candidates.ann import AnnIndex, ShardedAnnIndex
from pymk.config import AnnConfig


def embeddings(n: int, d: int, seed: int = 0, norm_spread: float = 0.1, noise: float = 0.5, latent: int = 16
               ) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) float32 embeddings of intrinsic dimension `latent`: clustered latent points (n / 500
    clusters, within-cluster noise `noise`) mapped to d dimensions, plus 0.05 isotropic noise, times
    log-normal norms. Returns (embeddings, cluster per user)."""
    rng = np.random.default_rng(seed)
    k = max(2, n // 500)
    centres = rng.normal(size=(k, latent)).astype(np.float32)
    proj = (rng.normal(size=(latent, d)) / np.sqrt(latent)).astype(np.float32)
    cluster = rng.integers(0, k, n)
    emb = np.empty((n, d), np.float32)
    for s in range(0, n, 100_000):  # chunked: bounded temporaries
        e = min(n, s + 100_000)
        z = centres[cluster[s:e]] + noise * rng.normal(size=(e - s, latent)).astype(np.float32)
        x = z @ proj + 0.05 * rng.normal(size=(e - s, d)).astype(np.float32)
        emb[s:e] = x * rng.lognormal(0.0, norm_spread, e - s).astype(np.float32)[:, None]
    return emb, cluster


def exact_top(emb: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    import faiss

    flat = faiss.IndexFlatIP(emb.shape[1])
    flat.add(emb)
    _, idx = flat.search(emb[queries], k + 1)
    return np.array([r[r != q][:k] for q, r in zip(queries, idx, strict=True)])


def recall(index, emb, queries, truth, k) -> float:
    _, got = index.search(emb[queries], k + 1)
    return float(np.mean([np.intersect1d(t, g[g != q][:k]).size / k for q, t, g in zip(queries, truth, got,
                                                                                          strict=True)]))


def throughput(index, emb, queries, k, repeat: int = 3) -> float:
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        index.search(emb[queries], k)
        best = min(best, time.perf_counter() - t)
    return queries.size / best


def latency(index, emb, queries, k) -> tuple[float, float]:
    times = []
    for q in queries:
        t = time.perf_counter()
        index.search(emb[q:q + 1], k)
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--kinds", default="ivf_sq8,hnsw")
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument("--norm-spread", type=float, default=0.1)
    ap.add_argument("--noise", type=float, default=0.5)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    t = time.perf_counter()
    emb, cluster = embeddings(args.users, args.dim, norm_spread=args.norm_spread, noise=args.noise)
    norms = np.linalg.norm(emb, axis=1)
    shard_of = (cluster % args.shards).astype(np.int32)
    rng = np.random.default_rng(1)
    queries = np.sort(rng.choice(args.users, args.queries, replace=False))
    truth = exact_top(emb, queries, args.k)
    print(f"{args.users:,} x {args.dim}-d embeddings, {args.queries} queries, exact top-{args.k} "
          f"({time.perf_counter() - t:.0f}s); max/median norm {norms.max() / np.median(norms):.2f}; {cores} cores; "
          f"shards {args.shards}")
    head = (f"{'index':<22}{'param':>7}{'recall':>8}{'q/s':>9}{'q/s/core':>10}{'p50 ms':>8}{'p99 ms':>8}"
            f"{'build s':>9}{'vs single q/s':>15}{'p50':>7}")
    print(head)
    lat_q = queries[:300]
    for kind in args.kinds.split(","):
        cfg = AnnConfig(kind=kind, hnsw_ef_construction=args.ef_construction)
        t = time.perf_counter()
        single = AnnIndex.build(emb, None, cfg, kind=kind)
        b_single = time.perf_counter() - t
        param = 1 if kind.startswith("ivf") else 16
        while True:
            single.set_search_param(param)
            rec = recall(single, emb, queries, truth, args.k)
            limit = single.index.nlist if kind.startswith("ivf") else 4096
            if rec >= args.target or param >= limit:
                break
            param = min(limit, param * 2)
        rows = []
        qps = throughput(single, emb, queries, args.k)
        p50, p99 = latency(single, emb, lat_q, args.k)
        rows.append((f"{kind} single", single.search_param, rec, qps, p50, p99, b_single))
        del single
        t = time.perf_counter()
        sharded = ShardedAnnIndex.build(emb, shard_of, cfg, kind=kind)
        b_sharded = time.perf_counter() - t
        sharded.set_search_param(param)
        rec_s = recall(sharded, emb, queries, truth, args.k)
        qps_s = throughput(sharded, emb, queries, args.k)
        p50_s, p99_s = latency(sharded, emb, lat_q, args.k)
        rows.append((f"{kind} {args.shards} shards", sharded.search_param, rec_s, qps_s, p50_s, p99_s, b_sharded))
        del sharded
        for i, (name, prm, r, q, a, b, bt) in enumerate(rows):
            ratio = f"{q / rows[0][3]:>14.2f}x{a / rows[0][4]:>6.2f}x" if i else f"{'':>15}{'':>7}"
            print(f"{name:<22}{prm:>7}{r:>8.4f}{q:>9,.0f}{q / cores:>10,.0f}{a:>8.2f}{b:>8.2f}{bt:>9.0f}{ratio}")
    print(f"peak RSS {rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
