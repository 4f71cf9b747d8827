"""Serving over shard servers on Ray against the unsharded service, side by side in one run.

    .venv/bin/python -m benchmarks.bench_serve_sharded [--users 1000000] [--avg-degree 10] [--shards 4]
        [--methods hash,community] [--requests 1000] [--cache /tmp/pymk-bench] [--config FILE] [--json OUT]

On `pymk synth --users N --avg-degree D --seed 0` the benchmark builds (once, cached) the unsharded model and
one model per partition method with `--shards S` (same config: by default Stage 1 and an Adamic-Adar ranker,
so no training noise separates them; `--config` e.g. with a GNN and a learned ranker, whose embeddings, ANN
shards and user features the shard servers then hold), starts a local Ray cluster with one `ShardServer`
actor per shard, and runs each service's whole request flow (`Service.recommend`, uncached, k = 20) for
the same random users, the services alternated user by user. It reports:
    equal       share of users whose (candidate, mutual count) lists equal those of the same model served
                whole in this process (the latency baseline is the unsharded build); the
                sharded service is the stateless ranking tier, whose PPR is pushed by the shard servers (another
                push order, at most `candidates.ppr.rounds` rounds), so `fof_equal` also counts users whose
                friends-of-friends candidates, order and mutual counts (that source alone, k = 1000) are identical,
                and `embedding_equal` those whose embedding source alone (k = 1000) is (with a GNN);
                `top20_overlap`: the mean share of the whole model's (candidate, mutual count) pairs in the
                tier's answer (a learned ranker scores PPR's estimate, so its order moves with it)
    latency     p50 / p99 per request, and requests per second, one client
    fan-out     shard servers called and adjacency entries moved per request (8 bytes each, int64)
    memory      measured in a fresh process that runs only the ranking tier (`--tier-memory`): its RSS,
                file-backed RSS and adjacency bytes mapped, and each shard server's adjacency entries
                (against total / S), bytes of its users' rows (embeddings, features), RSS, file-backed RSS
                and adjacency bytes mapped
    apply       `--events` degree-biased new friendships posted one at a time through `Model.apply` (the
                change path: the tier's living graph, then every shard holding an end, acknowledged), p50 /
                p99 against the unsharded model's apply; after each, the next request reads it (checked:
                the shard server's list of a holds b)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_fof import load_graph
from pymk.config import PymkConfig
from pymk.graph.edges import EdgeList
from pymk.pipeline.build import build_from_edges
from pymk.serving.service import Service
from pymk.serving.settings import ServeSettings


def build(g, out: Path, shards: int, method: str, config: Path | None = None) -> Path:
    if (out / "model.json").exists():
        return out
    if config is None:
        cfg = PymkConfig()
        cfg.ranker.kind = "adamic_adar"
    else:
        cfg = PymkConfig.from_file(config)
    if shards > 1:
        cfg.sharding.shards = shards
        cfg.sharding.method = method
    lo, hi = g.edge_pairs()
    edges = EdgeList(np.asarray(g.ids), lo.astype(np.int32), hi.astype(np.int32))
    t = time.perf_counter()
    build_from_edges(edges, out, cfg, log=lambda s: None)
    print(f"built {out.name} in {time.perf_counter() - t:.0f}s", flush=True)
    return out


def answer(svc, user):
    t = time.perf_counter()
    req = svc.recommend(int(user), 20)
    dt = time.perf_counter() - t
    return dt, [(int(r[0]), int(r[2])) for r in req.response], req.degraded


def same_source(plain, tier, user, source: str = "fof") -> bool:
    """Whether one Stage-1 source alone (k = 1000) gives `user` the same candidates, in the same order, with
    the same mutual counts."""
    out = []
    for m in (plain, tier):
        c = m.candidates(m.index_of([int(user)]), k=1000, sources=(source,))
        out.append((c.cand[0], c.features["cn"][0]))
    return all(np.array_equal(a, b) for a, b in zip(*out, strict=True))


def tier_memory(mdir: Path, users: np.ndarray, total_entries: int, shards: int) -> dict:
    """Runs `--tier-memory` in a fresh process: the ranking tier and its shard servers, nothing else."""
    import subprocess
    import sys

    with open("/tmp/pymk-tier-users.npy", "wb") as f:
        np.save(f, users)
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_serve_sharded", "--tier-memory", str(mdir),
                          "--shards", str(shards)], check=True, capture_output=True, text=True)
    rep = json.loads(out.stdout.strip().splitlines()[-1])
    for s in rep["servers"]:
        s["share_of_total"] = round(s["entries"] / total_entries, 4)
    rep["graph_bytes_total"] = total_entries * 4 + (rep["users"] + 1) * 8  # indices int32 + indptr int64
    return rep


def run_tier_only(mdir: Path, shards: int) -> None:
    """`--tier-memory`: serve the saved users from a ranking tier over Ray, then print memory per process."""
    import ray

    from pymk.serving.shard_server import process_memory

    users = np.load("/tmp/pymk-tier-users.npy")
    ray.init(num_cpus=max(2, shards), include_dashboard=False, log_to_driver=False)
    svc = Service.from_settings(ServeSettings(model=str(mdir), executor="ray", stream=False, cache_size=0,
                                              shard_timeout_ms=10_000))
    svc.warm()
    for u in users:
        answer(svc, u)
    mb = lambda b: round(b / 2**20, 1)  # noqa: E731
    me = process_memory()
    servers = svc.model.servers.server_stats()
    rep = {"users": int(svc.model.graph.num_users), "requests": int(users.size),
           "tier": {"rss_mb": mb(me["rss_bytes"]), "file_rss_mb": mb(me["rss_file_bytes"]),
                    "graph_mapped_mb": mb(me["graph_mapped_bytes"])},
           "servers": [{"shard": s["shard"], "entries": s["entries"], "rss_mb": mb(s["rss_bytes"]),
                        "user_rows_mb": mb(s["user_rows_bytes"]),
                        "file_rss_mb": mb(s["rss_file_bytes"]), "graph_mapped_mb": mb(s["graph_mapped_bytes"])}
                       for s in servers]}
    svc.close()
    ray.shutdown()
    print(json.dumps(rep))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tier-memory", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--avg-degree", type=float, default=10)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--methods", default="hash,community")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/pymk-bench"))
    ap.add_argument("--events", type=int, default=500)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--config", type=Path, help="the models' config (TOML; default: default Stage 1, Adamic-Adar)")
    args = ap.parse_args()
    if args.tier_memory:
        return run_tier_only(args.tier_memory, args.shards)
    import ray

    args.cache.mkdir(parents=True, exist_ok=True)
    g = load_graph(args.users, args.avg_degree, args.cache)
    tag = f"{args.users}-{args.avg_degree:g}" + (f"-{args.config.stem}" if args.config else "")
    plain_dir = build(g, args.cache / f"model-{tag}-plain", 1, "hash", args.config)
    rng = np.random.default_rng(0)
    users = np.asarray(g.ids)[rng.choice(g.num_users, args.requests, replace=False)]
    settings = {"stream": False, "cache_size": 0, "shard_timeout_ms": 10_000}
    ray.init(num_cpus=max(2, args.shards), include_dashboard=False, log_to_driver=False)
    report = {"machine": f"{platform.node()} {os.cpu_count()} cores", "users": args.users,
              "avg_degree": args.avg_degree, "shards": args.shards, "requests": args.requests, "methods": {}}
    total_entries = int(g.indices.shape[0])
    for method in args.methods.split(","):
        mdir = build(g, args.cache / f"model-{tag}-s{args.shards}-{method}", args.shards, method, args.config)
        plain = Service.from_settings(ServeSettings(model=str(plain_dir), **settings))  # fresh: no events yet
        plain.warm()
        sharded = Service.from_settings(ServeSettings(model=str(mdir), executor="ray", **settings))
        sharded.warm()
        # answers are compared with the same model served whole (in this process): with a GNN the two builds'
        # embeddings differ by training noise; without one the unsharded build answers the same
        whole = Service.from_settings(ServeSettings(model=str(mdir), tier=False, **settings))
        router = sharded.model.servers
        for u in users[:20]:  # warm both paths
            answer(sharded, u), answer(plain, u)
        lat_p, lat_s, equal, fof_equal, emb_equal, degraded, calls, moved = [], [], 0, 0, 0, 0, [], []
        overlap = []
        has_emb = whole.model.embeddings is not None
        for u in users:
            fof_equal += same_source(whole.model, sharded.model, u)
            emb_equal += has_emb and same_source(whole.model, sharded.model, u, "embedding")
            want = answer(whole, u)[1]
            dp = answer(plain, u)[0]
            r0, e0 = router.stats.requests, router.stats.entries
            ds, got, deg = answer(sharded, u)
            calls.append(router.stats.requests - r0)
            moved.append(router.stats.entries - e0)
            lat_p.append(dp)
            lat_s.append(ds)
            equal += got == want
            overlap.append(len(set(got) & set(want)) / max(len(want), 1))  # (candidate, mutual) pairs in both
            degraded += bool(deg)
        from benchmarks.bench_live import degree_biased
        from pymk.stream.log import EdgeEvent

        a_ev, b_ev = degree_biased(plain.model.graph, args.events, np.random.default_rng(1))
        ids = np.asarray(g.ids)
        ap_p, ap_s = [], []
        for x, y in zip(a_ev.tolist(), b_ev.tolist(), strict=True):
            ev = [EdgeEvent(int(ids[x]), int(ids[y]), 1.0)]
            t = time.perf_counter()
            plain.model.apply(ev)
            ap_p.append(time.perf_counter() - t)
            t = time.perf_counter()
            sharded.model.apply(ev)
            ap_s.append(time.perf_counter() - t)
            ptr, idx = router.lists(int(router.plan.home[x]), np.array([x]))
            assert y in idx.tolist(), (x, y)
        servers = router.server_stats()
        ms = lambda x, q: round(float(np.percentile(x, q)) * 1000, 2)  # noqa: E731
        rep = {
            "equal_share": equal / len(users), "fof_equal_share": fof_equal / len(users),
            "top20_overlap": round(float(np.mean(overlap)), 4),
            "embedding_equal_share": emb_equal / len(users) if has_emb else None, "degraded": degraded,
            "ranker": sharded.model.ranker_kind, "tier_holds_embeddings": sharded.model.embeddings is not None,
            "unsharded_ms": {"p50": ms(lat_p, 50), "p99": ms(lat_p, 99), "rps": round(len(users) / sum(lat_p), 1)},
            "sharded_ms": {"p50": ms(lat_s, 50), "p99": ms(lat_s, 99), "rps": round(len(users) / sum(lat_s), 1)},
            "p99_ratio": round(ms(lat_s, 99) / ms(lat_p, 99), 2),
            "apply_unsharded_ms": {"p50": ms(ap_p, 50), "p99": ms(ap_p, 99)},
            "apply_sharded_ms": {"p50": ms(ap_s, 50), "p99": ms(ap_s, 99)},
            "calls_per_request": round(float(np.mean(calls)), 2),
            "bytes_per_request": round(float(np.mean(moved)) * 8),
            "servers": [{"shard": s["shard"], "entries": s["entries"],
                         "share_of_total": round(s["entries"] / total_entries, 4),
                         "rss_mb": round(s["rss_bytes"] / 2**20), "file_rss_mb": round(s["rss_file_bytes"] / 2**20)}
                        for s in servers],
            "entries_cap": round(1 / args.shards, 4),
        }
        for h in router.servers:
            ray.kill(h)
        sharded.close()
        whole.close()
        plain.close()
        report["methods"][method] = rep
        ray.shutdown()  # the memory run starts its own cluster, with nothing else in its process
        rep["memory"] = tier_memory(mdir, users[:200], total_entries, args.shards)
        print(json.dumps({method: rep}, indent=1), flush=True)
        ray.init(num_cpus=max(2, args.shards), include_dashboard=False, log_to_driver=False)
    ray.shutdown()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
