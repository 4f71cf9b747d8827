"""Tiered embeddings: what int8 costs in ANN recall, what it saves in bytes, and each tier's lookup time.

    .venv/bin/python -m benchmarks.bench_embeddings [--users 1000000] [--redis URL]

On `bench_ann`'s synthetic 128-d embeddings (clustered, low intrinsic dimension), side by side:
    recall@100 against exact float32 search, for exact search and the calibrated ivf_sq8 index, queried
    with the float32 vectors and with their int8 round trip (what the hot and cold tiers hand Stage 1);
    bytes per user: float32, int8 + scale, and as stored (RocksDB on disk, Redis `MEMORY USAGE`);
    lookup latency of one user and of 1,000 users from the memory-mapped matrix (the embedded default),
    the Redis hot tier (one MGET) and the RocksDB cold tier (one multi-get).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_ann import embeddings, exact_top
from pymk.candidates.ann import AnnIndex, calibrate
from pymk.config import AnnConfig
from pymk.serving.embeddings import TieredEmbeddings, dequantize_int8, publish_hot, quantize_int8, write_cold
from pymk.serving.redis_link import RedisLink


def recall_of(index_search, queries_vec, queries, truth, k) -> float:
    _, got = index_search(queries_vec, k + 1)
    return float(np.mean([np.intersect1d(t, g[g != q][:k]).size / k
                          for q, t, g in zip(queries, truth, got, strict=True)]))


def timed(fn, reps) -> tuple[float, float]:
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.percentile(ts, 50) * 1e3), float(np.percentile(ts, 99) * 1e3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--hot", type=int, default=100_000, help="users put in the Redis hot tier")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = ap.parse_args()
    import faiss

    emb, _ = embeddings(args.users, args.dim)
    rng = np.random.default_rng(1)
    queries = np.sort(rng.choice(args.users, args.queries, replace=False))
    truth = exact_top(emb, queries, args.k)
    q_f32 = emb[queries]
    q_i8 = dequantize_int8(*quantize_int8(q_f32))
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(emb)
    ivf = AnnIndex.build(emb, None, AnnConfig(kind="ivf_sq8"), kind="ivf_sq8")
    cal = calibrate(ivf, emb, AnnConfig(kind="ivf_sq8"))
    print(f"{args.users:,} x {args.dim}-d embeddings, {args.queries} queries, recall@{args.k} against exact float32 "
          f"search; {platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
    print(f"{'search':<28}{'float32 queries':>16}{'int8 queries':>14}{'int8 / float32':>16}")
    for name, search in (("exact (flat inner product)", flat.search),
                         (f"ivf_sq8, nprobe {cal['param']}", ivf.search)):
        a = recall_of(search, q_f32, queries, truth, args.k)
        b = recall_of(search, q_i8, queries, truth, args.k)
        print(f"{name:<28}{a:>16.4f}{b:>14.4f}{b / a:>15.4f}x")

    d = args.dim
    with tempfile.TemporaryDirectory() as tmp:
        cold = Path(tmp) / "cold"
        t = time.perf_counter()
        write_cold(cold, emb)
        w_cold = time.perf_counter() - t
        disk = sum(f.stat().st_size for f in cold.rglob("*") if f.is_file())
        np.save(Path(tmp) / "emb.npy", emb)
        mm = np.load(Path(tmp) / "emb.npy", mmap_mode="r")
        link = RedisLink.from_url(args.redis, timeout_ms=1000)
        hot = rng.choice(args.users, args.hot, replace=False)
        version = f"bench-{os.getpid()}"
        t = time.perf_counter()
        publish_hot(link.client, version, emb, hot)
        w_hot = time.perf_counter() - t
        key = f"pymk:emb:{version}:{int(hot[0])}"
        redis_bytes = link.client.memory_usage(key)
        print(f"\nbytes per user: float32 {4 * d}, int8 + scale {d + 4} ({(d + 4) / (4 * d):.3f}x); stored: "
              f"RocksDB {disk / args.users:.1f} on disk (written in {w_cold:.1f} s), Redis {redis_bytes} per key "
              f"with its overhead ({args.hot:,} hot users published in {w_hot:.1f} s)")
        tiers = {
            "mmap (float32)": TieredEmbeddings(mm),
            "Redis hot tier": TieredEmbeddings(mm, link=link, version=version),
            "RocksDB cold tier": TieredEmbeddings(mm, cold_path=cold),
        }
        one = [hot[rng.integers(args.hot, size=1)] for _ in range(500)]
        many = [hot[rng.integers(args.hot, size=1000)] for _ in range(50)]
        print(f"\n{'lookup':<20}{'1 user p50 ms':>15}{'p99':>8}{'1,000 users p50 ms':>20}{'p99':>8}")
        for name, store in tiers.items():
            it1, itm = iter(one), iter(many)
            store[one[0]]  # warm
            a50, a99 = timed(lambda s=store, it=it1: s[next(it)], len(one))
            b50, b99 = timed(lambda s=store, it=itm: s[next(it)], len(many))
            print(f"{name:<20}{a50:>15.3f}{a99:>8.3f}{b50:>20.3f}{b99:>8.3f}   {store.counts}")
            if hasattr(store, "close"):
                store.close()
        keys = list(link.client.scan_iter(f"pymk:emb:{version}:*", count=10_000))
        for i in range(0, len(keys), 10_000):
            link.client.delete(*keys[i:i + 10_000])


if __name__ == "__main__":
    main()
