"""Shared test helpers: building graphs from edge lists and a networkx reference."""

from __future__ import annotations

import networkx as nx
import numpy as np

from pymk.graph.edges import EdgeList
from pymk.graph.snapshot import CSRGraph


def graph_from_pairs(pairs, n: int) -> CSRGraph:
    """A CSRGraph on users 0..n-1 (external id == dense index) from any list of pairs."""
    p = np.asarray(pairs, np.int64).reshape(-1, 2)
    p = p[p[:, 0] != p[:, 1]]
    p = np.unique(np.sort(p, axis=1), axis=0)
    return CSRGraph.from_edges(EdgeList(np.arange(n, dtype=np.int64), p[:, 0].astype(np.int32),
                                        p[:, 1].astype(np.int32)))


def synth_graph(users: int, avg_degree: float, seed: int, **kw) -> CSRGraph:
    """pymk's synthetic social graph (timestamps included) as a CSRGraph; `kw`: more `SynthConfig` fields."""
    from pymk.graph.edges import normalize_edges
    from pymk.graph.ingest import RawEdges
    from pymk.graph.synth import SynthConfig, generate

    src, dst, ts = generate(SynthConfig(users, avg_degree, seed=seed, **kw))
    edges, _ = normalize_edges(RawEdges(src, dst, ts, "synth", src.size))
    return CSRGraph.from_edges(edges)


def nx_graph(graph: CSRGraph) -> nx.Graph:
    g = nx.Graph()
    g.add_nodes_from(range(graph.num_users))
    lo, hi = graph.edge_pairs()
    g.add_edges_from(zip(lo.tolist(), hi.tolist(), strict=True))
    return g


def reference_fof(g: nx.Graph, u: int, blocked=()) -> dict[int, tuple[int, float, float]]:
    """Brute force: every 2-hop non-friend c of u -> (common neighbours, Adamic-Adar, RA)."""
    out = {}
    excluded = set(g[u]) | {u} | set(blocked)
    for c in g.nodes:
        if c in excluded:
            continue
        common = set(g[u]) & set(g[c])
        if common:
            out[c] = (len(common), sum(1 / np.log(g.degree(v)) for v in common),
                      sum(1 / g.degree(v) for v in common))
    return out


def build_learned_model(out, *, users: int = 600, id_offset: int = 0, shards: int = 1):
    """A small synthetic model with a LightGBM ranker (so it has a feature table); returns its dir."""
    return build_synth_model(out, users=users, degree=10, seed=3, id_offset=id_offset, shards=shards,
                             ranker="lightgbm")


def build_synth_model(out, *, users: int, degree: float, seed: int, id_offset: int = 0, shards: int = 1,
                      method: str | None = None, ranker: str = "adamic_adar"):
    """A model of `pymk synth`'s graph (users ids id_offset.., `shards` shards by `method`), quickly: a
    heuristic ranker unless `ranker` = "lightgbm" (20 rounds)."""
    from pymk.config import PymkConfig
    from pymk.graph.synth import SynthConfig, generate
    from pymk.pipeline.build import build_from_edges

    src, dst, _ = generate(SynthConfig(users, degree, seed=seed))
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    keys = np.unique(lo * np.int64(users) + hi)
    cfg = PymkConfig()
    cfg.ranker.kind = ranker
    if ranker == "lightgbm":
        cfg.ranker.rounds = 20
    if shards > 1:
        cfg.sharding.shards = shards
        if method is not None:
            cfg.sharding.method = method
    edges = EdgeList(np.arange(users, dtype=np.int64) + id_offset, (keys // users).astype(np.int32),
                     (keys % users).astype(np.int32))
    return build_from_edges(edges, out, cfg, log=lambda s: None)


def ranker_choice(stage: dict) -> str:
    """The ranker a build's recorded validation figures call for (the learned one only if it beats every
    heuristic on the same validation lists), from `model.json`'s ranker stage."""
    val = stage["validation_recall@20"]
    heur = {k: val[k] for k in ("adamic_adar", "resource_allocation", "common_neighbors")}
    best = max(heur, key=heur.get)
    return "lightgbm" if val[stage["objective"]] > heur[best] else best
