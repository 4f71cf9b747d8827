"""Streaming embedding refresh vs full re-inference, staleness on a day of new edges, and the service's lag.

    .venv/bin/python -m benchmarks.bench_stream [--users 1000000] [--avg-degree 50] [--edges 300]
        [--serve-users 40000]

1. Refresh: the default GraphSAGE (dim 64, 2 layers; weights do not change the cost, so they are not
   trained here) over the synthetic graph. Baseline: full layer-wise inference over the whole graph
   (what a refresh without the cached hidden states costs), all cores. pymk: one new edge at a time,
   endpoints drawn by degree (the far end of a random existing edge, as new friendships favour
   well-connected users), one core, at radius 1 (the brief's policy: A, B and their friends) and
   radius 2 (every embedding exact), then micro-batches of 10, 100, 1000 edges at radius 1 (a refresh
   that would read more than half of what full inference reads runs full inference instead). The
   radius-2 state is checked against full inference over the new graph at the end.
2. Staleness (the brief's Strategy 2): a window of 1 and 7 days ending where 95% of the graph's edges
   exist (its last timestamps are a thin tail); the share of users whose staleness (new neighbours in the
   window / degree) passes 5%, against the share a per-edge streaming refresh touches.
3. The service: a model with GNN embeddings built on a small synthetic graph (--serve-users), edges
   posted to `POST /v1/edges`; lag = post -> the worker has refreshed the embeddings (file log).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_fof import load_graph
from pymk.gnn.config import GnnConfig
from pymk.gnn.model import LinkEncoder, degree_stats, input_features, structural_features
from pymk.gnn.train import infer
from pymk.graph.edges import EdgeList
from pymk.graph.snapshot import CSRGraph
from pymk.stream.adjacency import LiveAdjacency
from pymk.stream.refresh import EmbeddingRefresher
from pymk.stream.staleness import StalenessTracker


def degree_biased_edges(g: CSRGraph, count: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """New friendships whose ends are the far ends of random existing edges (degree-biased), not friends yet."""
    out_a, out_b = [], []
    idx = np.asarray(g.indices)
    while len(out_a) < count:
        a, b = idx[rng.integers(0, idx.size, 2)]
        if a != b and not np.any(g.neighbors(a) == b):
            out_a.append(int(a))
            out_b.append(int(b))
    return np.array(out_a), np.array(out_b)


def refresh_section(g: CSRGraph, n_edges: int, exact_edges: int) -> None:
    torch.manual_seed(0)
    cfg = GnnConfig()
    model = LinkEncoder(g.num_users, cfg).eval()
    t = time.perf_counter()
    struct = torch.from_numpy(input_features(g, cfg))
    emb, states = infer(model, g, struct, keep_states=True)
    full_s = time.perf_counter() - t
    print(f"full inference ({torch.get_num_threads()} threads): {full_s:.2f} s for {g.num_users:,} users")
    rng = np.random.default_rng(1)
    lo, hi = degree_biased_edges(g, n_edges, rng)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for radius in (1, 2):
        adj = LiveAdjacency(g)
        r = EmbeddingRefresher(model, adj, radius=radius, emb=emb.copy(), states=[s.copy() for s in states])
        r.apply(lo[:3], hi[:3])  # warm-up outside the timing
        r.full_passes = 0
        ms, users = [], []
        for a, b in zip(lo[3:n_edges if radius == 1 else exact_edges], hi[3:n_edges if radius == 1 else exact_edges],
                        strict=True):
            out = r.apply([a], [b])
            ms.append(out.seconds * 1000)
            users.append(out.users.size)
        ms = np.array(ms)
        print(f"radius {radius} (1 thread): per edge p50 {np.percentile(ms, 50):.2f} ms, p99 "
              f"{np.percentile(ms, 99):.1f} ms, mean {ms.mean():.2f} ms; users refreshed / edge: mean "
              f"{np.mean(users):.0f}, max {max(users)}; full inference / mean refresh = "
              f"{full_s * 1000 / ms.mean():,.0f}x; {r.full_passes} of {ms.size} ran full inference")
        if radius == 1:  # what the service pays to let Stage 1 see the new friendships
            from pymk.candidates.stage1 import Stage1
            from pymk.config import CandidatesConfig

            t = time.perf_counter()
            live = adj.to_graph()
            t_csr = time.perf_counter() - t
            Stage1(live, CandidatesConfig())
            print(f"  compaction for Stage 1 ({adj.added} added friendships): new CSR {t_csr:.2f} s, with the new "
                  f"Stage 1 {time.perf_counter() - t:.2f} s")
        if radius == 1:  # under load the worker takes micro-batches: their balls overlap, the cost per edge falls
            more_lo, more_hi = degree_biased_edges(g, 3 * 1000 + 3 * 100 + 3 * 10, rng)
            at = 0
            for batch in (10, 100, 1000):
                t = time.perf_counter()
                for _ in range(3):
                    r.apply(more_lo[at:at + batch], more_hi[at:at + batch])
                    at += batch
                dt = time.perf_counter() - t
                print(f"  micro-batches of {batch} edges (1 thread): {3 * batch / dt:,.0f} edges/s, "
                      f"{dt / 3 * 1000:.0f} ms a batch; full inference passes so far {r.full_passes}")
        if radius == 2:  # exactness check against full inference over the new graph
            torch.set_num_threads(threads)
            g2 = adj.to_graph()
            s2 = input_features(g2, cfg)
            s2[:, 0] = structural_features(g2.degree, degree_stats(g.degree))[:, 0]
            ref = infer(model, g2, torch.from_numpy(s2))
            print(f"  max |refreshed - full inference| over all users: {np.abs(r.emb - ref).max():.2e}")
    torch.set_num_threads(threads)


def staleness_section(g: CSRGraph, day: float = 86_400.0) -> None:
    if g.ts is None:
        print("staleness: the graph has no timestamps")
        return
    indptr, idx, ts = np.asarray(g.indptr), np.asarray(g.indices), np.asarray(g.ts)
    src = np.repeat(np.arange(g.num_users), np.diff(indptr))
    keep = src < idx
    lo, hi, t = src[keep], idx[keep].astype(np.int64), ts[keep]
    # the synthetic graph's last timestamps are a thin tail of late triadic closures: measure a window
    # that ends where 95% of the graph exists, while it still grows at its usual rate
    end = float(np.quantile(t, 0.95))
    for span_days in (1, 7):
        cut = end - span_days * day
        now = t <= end
        new = now & (t > cut)
        deg_before = np.bincount(np.concatenate([lo[now & ~new], hi[now & ~new]]), minlength=g.num_users)
        deg_after = np.bincount(np.concatenate([lo[now], hi[now]]), minlength=g.num_users)
        tracker = StalenessTracker(deg_after, window_s=span_days * day, threshold=0.05)
        tracker.record(lo[new], hi[new], t[new])
        due = tracker.due()
        active = deg_after > 0
        adj = LiveAdjacency(CSRGraph.from_edges(EdgeList(g.ids, lo[now], hi[now])))
        touched = adj.ball(np.unique(np.concatenate([lo[new], hi[new]])), 1)
        print(f"{span_days} day(s) of growth: {int(new.sum()):,} new edges ({int(new.sum()) / now.sum():.2%} of the "
              f"graph); staleness > 5%: {due.size:,} users ({due.size / active.sum():.1%} of users with friends; "
              f"{np.mean(deg_before[due] == 0):.0%} of them new users); a streaming refresh at radius 1 touches "
              f"{touched.size:,} ({touched.size / active.sum():.1%})")


def serve_section(users: int, posts: int) -> None:
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from pymk.cli import app
    from pymk.graph.synth import SynthConfig, generate, write_edges
    from pymk.serving.app import create_app
    from pymk.serving.service import Service
    from pymk.serving.settings import ServeSettings

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        edges = write_edges(tmp / "e.csv", *generate(SynthConfig(users, 15, seed=3)))
        (tmp / "c.toml").write_text("[gnn]\nenabled = true\nepochs = 1\n")
        t = time.perf_counter()
        res = CliRunner().invoke(app, ["build", "--edges", str(edges), "--out", str(tmp / "m"), "--config",
                                       str(tmp / "c.toml")])
        assert res.exit_code == 0, res.output
        print(f"service: model with GNN embeddings built on {users:,} users in {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        svc = Service.from_settings(ServeSettings(model=str(tmp / "m"), stream_block_ms=5))
        print(f"service start incl. the stream worker's hidden states: {time.perf_counter() - t:.1f} s")
        client = TestClient(create_app(svc))
        g = svc.model.graph
        lo, hi = degree_biased_edges(svc.model.snapshot, posts, np.random.default_rng(5))
        lags = []
        for a, b in zip(lo, hi, strict=True):
            t = time.perf_counter()
            # the post answers once this worker applied it: graph delta, embeddings, ANN, cache invalidations
            assert client.post("/v1/edges", json={"src": int(g.ids[a]), "dst": int(g.ids[b])}).status_code == 200
            lags.append((time.perf_counter() - t) * 1000)
            assert svc.model.graph.has_edge(int(a), int(b))  # Stage 1 reads it from the next request
        lags = np.array(lags)
        print(f"POST /v1/edges -> applied: graph delta, embeddings refreshed, ANN updated, caches invalidated "
              f"({posts} edges, one at a time): p50 {np.percentile(lags, 50):.1f} ms, p99 "
              f"{np.percentile(lags, 99):.1f} ms; Stage 1 reads it from the next request")
        svc.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--avg-degree", type=float, default=50)
    ap.add_argument("--edges", type=int, default=300, help="single-edge refreshes timed at radius 1")
    ap.add_argument("--exact-edges", type=int, default=40, help="... and at radius 2 (every embedding exact)")
    ap.add_argument("--serve-users", type=int, default=40_000)
    ap.add_argument("--posts", type=int, default=200)
    ap.add_argument("--cache", type=Path, default=Path("bench-data"))
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores; torch {torch.__version__}")
    g = load_graph(args.users, args.avg_degree, args.cache)
    print(f"graph: synth {args.users:,} x {args.avg_degree:g} ({g.num_users:,} users, {g.num_edges:,} edges)")
    refresh_section(g, args.edges, args.exact_edges)
    staleness_section(g)
    if args.serve_users:
        serve_section(args.serve_users, args.posts)


if __name__ == "__main__":
    main()
