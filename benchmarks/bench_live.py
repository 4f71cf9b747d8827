"""The living graph: event -> visible latency, delta throughput, friends-of-friends over snapshot + delta,
and recommendations for users who joined after the build.

    .venv/bin/python -m benchmarks.bench_live [--sections visible,throughput,fof,newusers]
        [--users 1000000,10000000] [--avg-degree 10] [--events 2000] [--cache /tmp/pymk-bench]

1. visible: on each synthetic graph (`pymk synth --users N --avg-degree D --seed 0`, memory-mapped
   snapshot), degree-biased new friendships a-b one at a time: the time to apply the event to the delta
   (after which any request reads it) and, for a friend x of a, the following friends-of-friends request
   (one user, k = 1000, the serving path); the request's mutual count of (x, b) is checked against a
   merge of the two current lists. Baseline: what the service did before, a whole-graph CSR rebuild
   (`to_graph`) before a request could see an event.
2. throughput: 100,000 degree-biased events applied in micro-batches of 1,000 on one core.
3. fof: 1% of the graph's edges (random) held out of the snapshot and applied to the delta; the same
   2,000 random users' friends-of-friends (top 100, Adamic-Adar, one user per call as the service asks)
   on snapshot + delta and on the compacted snapshot, alternated five times; the ratio of the medians.
4. newusers: on the two shared graphs, 5% of users (with >= 5 friends) held out of the build; then 80% of
   each one's friendships to built users are posted (new users, `Model.apply`); recall@20 of the other 20%
   for pymk (the model's default Stage 1 + ranker on the live graph) against Adamic-Adar on a fresh
   rebuild of the same graph (snapshot + posted edges).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_fof import load_graph
from pymk.candidates.fof import friends_of_friends, pair_scores
from pymk.graph.live import ADD, LiveGraph
from pymk.graph.snapshot import CSRGraph


def degree_biased(g, count: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """New friendships: far ends of random existing adjacency entries, not friends yet, distinct pairs."""
    idx = np.asarray(g.snapshot.indices if hasattr(g, "snapshot") else g.indices)
    a = idx[rng.integers(0, idx.size, 3 * count)].astype(np.int64)
    b = idx[rng.integers(0, idx.size, 3 * count)].astype(np.int64)
    keep = a != b
    a, b = a[keep], b[keep]
    _, first = np.unique(np.minimum(a, b) * np.int64(1 << 32) + np.maximum(a, b), return_index=True)
    first = np.sort(first)
    a, b = a[first], b[first]
    ok = np.array([not g.has_edge(int(x), int(y)) for x, y in zip(a[:2 * count], b[:2 * count], strict=True)])
    return a[:2 * count][ok][:count], b[:2 * count][ok][:count]


def pct(x, q) -> float:
    return float(np.percentile(np.asarray(x) * 1000, q))


def matched(g, degrees: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """New friendships whose endpoints have exactly the given (e, 2) degrees (the nearest degree present),
    so two graphs of different size are compared on the same per-event work."""
    deg = np.asarray(g.degree)
    order = np.argsort(deg, kind="stable")
    sd = deg[order]
    out = []
    for d in degrees.ravel().tolist():
        lo_, hi_ = np.searchsorted(sd, d, "left"), np.searchsorted(sd, d, "right")
        if hi_ == lo_:  # no user of that degree: the nearest one
            lo_ = min(lo_, sd.size - 1)
            hi_ = lo_ + 1
        out.append(int(order[rng.integers(lo_, hi_)]))
    pairs = np.array(out, np.int64).reshape(-1, 2)
    ok = np.array([x != y and not g.has_edge(int(x), int(y)) for x, y in pairs.tolist()])
    return pairs[ok, 0], pairs[ok, 1]


def visible(users: int, deg: float, cache: Path, events: int, like: np.ndarray | None = None) -> dict:
    """Event -> visible; `like`: (e, 2) endpoint degrees to match (else degree-biased events)."""
    snap = load_graph(users, deg, cache)
    live = LiveGraph(snap)
    rng = np.random.default_rng(1)
    a, b = degree_biased(live, events, rng) if like is None else matched(live, like, rng)
    degrees = np.stack([live.degree[a], live.degree[b]], axis=1)
    friends_of_friends(live, np.array([0]), 10)  # compile outside the timing
    live.apply(ADD, a[:1], b[:1])
    apply_s, req_s = [], []
    for x_a, x_b in zip(a[1:].tolist(), b[1:].tolist(), strict=True):
        t = time.perf_counter()
        changed = live.apply(ADD, [x_a], [x_b])
        t1 = time.perf_counter()
        fr = live.neighbors(x_a)
        x = int(fr[0]) if fr[0] != x_b else int(fr[-1])
        res = friends_of_friends(live, np.array([x]), 1000, score="aa")
        t2 = time.perf_counter()
        if changed[0]:
            apply_s.append(t1 - t)
            req_s.append(t2 - t)
        want = len(np.intersect1d(live.neighbors(x), live.neighbors(x_b)))
        got, _, _ = pair_scores(live, np.array([x]), np.array([[x_b]]), np.array([[True]]))
        assert int(got[0]) == want and (x_b in live.neighbors(x) or want >= 1)
        hit = np.flatnonzero(res.cand[0, :res.count[0]] == x_b)
        assert not hit.size or int(res.cn[0, hit[0]]) == want
    t = time.perf_counter()
    live.to_graph()
    rebuild = time.perf_counter() - t
    out = {"users": users, "edges": snap.num_edges, "events": len(apply_s), "apply_p50_ms": pct(apply_s, 50),
           "apply_p99_ms": pct(apply_s, 99), "visible_p50_ms": pct(req_s, 50), "visible_p99_ms": pct(req_s, 99),
           "rebuild_s": rebuild, "degrees": degrees}
    tag = " (endpoint degrees matched to the first graph)" if like is not None else ""
    print(f"visible {users:,} users{tag} ({snap.num_edges:,} edges): apply p50 {out['apply_p50_ms']:.3f} ms, p99 "
          f"{out['apply_p99_ms']:.3f} ms; apply + next fof request p50 {out['visible_p50_ms']:.2f} ms, p99 "
          f"{out['visible_p99_ms']:.2f} ms; baseline whole-CSR rebuild {rebuild:.2f} s", flush=True)
    return out


def throughput(users: int, deg: float, cache: Path, n: int = 100_000) -> dict:
    import numba

    numba.set_num_threads(1)
    live = LiveGraph(load_graph(users, deg, cache))
    a, b = degree_biased(live, n, np.random.default_rng(2))
    live.apply(ADD, a[:10], b[:10])
    t = time.perf_counter()
    for s in range(10, a.size, 1000):
        live.apply(ADD, a[s:s + 1000], b[s:s + 1000])
    dt = time.perf_counter() - t
    rate = (a.size - 10) / dt
    print(f"throughput {users:,} users: {a.size - 10:,} events in {dt:.2f} s = {rate:,.0f} events/s (one core)",
          flush=True)
    return {"users": users, "events_per_s": rate}


def fof_overlay(users: int, deg: float, cache: Path, n_users: int = 2000, rounds: int = 5) -> dict:
    import numba

    numba.set_num_threads(1)
    g = load_graph(users, deg, cache)
    lo, hi = g.edge_pairs()
    rng = np.random.default_rng(3)
    held = rng.random(lo.size) < 0.01
    from pymk.graph.edges import EdgeList

    base = CSRGraph.from_edges(EdgeList(np.asarray(g.ids), lo[~held], hi[~held]))
    live = LiveGraph(base)
    live.apply(ADD, lo[held], hi[held])
    compact = live.to_graph()
    sample = rng.choice(g.num_users, n_users, replace=False)
    for graph in (live, compact):
        friends_of_friends(graph, sample[:1], 100)
    times = {"live": [], "compact": []}
    for _ in range(rounds):
        for name, graph in (("live", live), ("compact", compact)):
            t = time.perf_counter()
            for u in sample.tolist():
                friends_of_friends(graph, np.array([u]), 100, score="aa")
            times[name].append(time.perf_counter() - t)
    r1 = friends_of_friends(live, sample[:200], 100)
    r2 = friends_of_friends(compact, sample[:200], 100)
    assert np.array_equal(r1.cand, r2.cand) and np.array_equal(r1.cn, r2.cn)
    ratio = np.median(times["live"]) / np.median(times["compact"])
    print(f"fof {users:,} users, {int(held.sum()):,} edges (1%) in the delta: snapshot + delta "
          f"{np.median(times['live']) * 1000 / n_users:.3f} ms/user, compacted "
          f"{np.median(times['compact']) * 1000 / n_users:.3f} ms/user: ratio {ratio:.3f}", flush=True)
    return {"users": users, "ratio": float(ratio)}


def new_users(path: Path, seed: int = 0, gnn: bool = False) -> dict:
    from pymk.graph.edges import EdgeList
    from pymk.pipeline.build import build_from_edges, ingest
    from pymk.pipeline.model import Model
    from pymk.stream.log import EdgeEvent

    edges, _ = ingest(path, show_progress=False, log=lambda s: None)
    n = edges.num_users
    lo, hi = edges.lo.astype(np.int64), edges.hi.astype(np.int64)
    degree = np.bincount(lo, minlength=n) + np.bincount(hi, minlength=n)
    rng = np.random.default_rng(seed)
    cand = np.flatnonzero(degree >= 5)
    held = np.zeros(n, bool)
    held[rng.choice(cand, int(0.05 * n), replace=False)] = True
    keep = ~held[lo] & ~held[hi]
    built = np.flatnonzero(~held)
    remap = np.full(n, -1, np.int64)
    remap[built] = np.arange(built.size)
    with tempfile.TemporaryDirectory() as tmp:
        sub = EdgeList(edges.ids[built], remap[lo[keep]].astype(np.int32), remap[hi[keep]].astype(np.int32))
        t = time.perf_counter()
        from pymk.config import PymkConfig

        cfg = PymkConfig()
        cfg.gnn.enabled = gnn
        mdir = build_from_edges(sub, Path(tmp) / "m", cfg, log=lambda s: None)
        build_s = time.perf_counter() - t
        model = Model.load(mdir)
        # each held-out user's friendships to built users, 80% posted, 20% to find
        posts, tests = [], {}
        for h in np.flatnonzero(held).tolist():
            nb = np.concatenate([hi[lo == h], lo[hi == h]])
            nb = nb[~held[nb]]
            if nb.size < 5:
                continue
            nb = rng.permutation(nb)
            cut = int(round(0.8 * nb.size))
            posts += [(int(edges.ids[h]), int(edges.ids[v])) for v in nb[:cut]]
            tests[int(edges.ids[h])] = set(edges.ids[nb[cut:]].tolist())
        order = rng.permutation(len(posts))
        model.apply([EdgeEvent(*posts[i], 1.7e9) for i in order])
        rebuilt = model.graph.to_graph()  # the same graph as a fresh rebuild would have
        ids = np.array(sorted(tests), np.int64)
        idx = model.index_of(ids)
        assert (idx >= 0).all()
        extra = ""
        if gnn:  # inductive embeddings for the new users, as the service's stream worker makes them
            from pymk.stream.inductive import GrowingEmbeddings, neighbour_centroids

            st1 = model.stage1
            plain = st1.embeddings
            without = model.recommend(idx, 20)
            grown = GrowingEmbeddings(plain)
            got, vec = neighbour_centroids(model.graph, np.asarray(plain), idx, plain.shape[0])
            grown.set(got, vec)
            st1.embeddings = grown
            if st1.ann is not None:
                st1.ann.add(got, vec)
            emb_only = st1.generate(idx, k=100, sources=("embedding",))
            gids0 = model.graph.ids
            r_emb = np.mean([len(set(gids0[emb_only.cand[b, :emb_only.count[b]]].tolist()) & tests[u]) / len(tests[u])
                             for b, u in enumerate(ids.tolist())])
            r_without = np.mean([len(set(gids0[without.cand[b, :without.count[b]]].tolist()) & tests[u])
                                 / len(tests[u]) for b, u in enumerate(ids.tolist())])
            extra = (f"; GNN model: embedding source alone recall@100 {r_emb:.4f} from the inductive vectors, "
                     f"pymk recall@20 without them {r_without:.4f}")
        ranked = model.recommend(idx, 20)
        aa = friends_of_friends(rebuilt, idx, 20, score="aa")
        gids = model.graph.ids
        rec_p, rec_a = [], []
        for b, u in enumerate(ids.tolist()):
            truth = tests[u]
            got = set(gids[ranked.cand[b, :ranked.count[b]]].tolist())
            base = set(gids[aa.cand[b, :aa.count[b]]].tolist())
            rec_p.append(len(got & truth) / len(truth))
            rec_a.append(len(base & truth) / len(truth))
    p, a = float(np.mean(rec_p)), float(np.mean(rec_a))
    print(f"newusers {path.name}: {len(ids)} new users ({len(posts):,} friendships posted), recall@20 pymk "
          f"{p:.4f} vs Adamic-Adar on a rebuild {a:.4f}: {p / a:.3f}x (build {build_s:.1f} s, ranker "
          f"{model.ranker_kind}){extra}", flush=True)
    return {"graph": path.name, "new_users": len(ids), "pymk": p, "aa_rebuild": a, "ratio": p / a}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sections", default="visible,throughput,fof,newusers")
    ap.add_argument("--users", default="1000000,10000000")
    ap.add_argument("--avg-degree", type=float, default=10)
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--gnn", action="store_true", help="newusers: build with GNN embeddings (inductive vectors)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "pymk-bench")
    args = ap.parse_args()
    sections = args.sections.split(",")
    sizes = [int(x) for x in args.users.split(",")]
    print(f"machine: {os.cpu_count()} cores; numba threads {os.environ.get('NUMBA_NUM_THREADS', 'all')}")
    if "visible" in sections:
        res = [visible(n, args.avg_degree, args.cache, args.events) for n in sizes]
        for r in res[1:]:
            m = visible(r["users"], args.avg_degree, args.cache, args.events, like=res[0]["degrees"])
            own, same = r["apply_p99_ms"] / res[0]["apply_p99_ms"], m["apply_p99_ms"] / res[0]["apply_p99_ms"]
            print(f"apply p99 {r['users']:,} / {res[0]['users']:,}: {own:.2f}x "
                  f"with its own (degree-biased, larger hubs) events; {same:.2f}x "
                  f"on events of the same endpoint degrees; apply + request "
                  f"{m['visible_p99_ms'] / res[0]['visible_p99_ms']:.2f}x")
    if "throughput" in sections:
        throughput(sizes[0], args.avg_degree, args.cache)
    if "fof" in sections:
        fof_overlay(sizes[0], args.avg_degree, args.cache)
    if "newusers" in sections:
        data = Path(__file__).resolve().parents[1] / "tests" / "data"
        for name in ("lastfm-asia.csv.gz", "ego-facebook.txt.gz"):
            new_users(data / name, gnn=args.gnn)


if __name__ == "__main__":
    main()
