import networkx as nx
import numpy as np

from pymk.graph.edges import normalize_edges
from pymk.graph.ingest import RawEdges, read_edges
from pymk.graph.snapshot import CSRGraph
from pymk.graph.synth import SynthConfig, generate, write_edges


def test_deterministic_for_a_seed():
    a = generate(SynthConfig(3000, 12, seed=7))
    b = generate(SynthConfig(3000, 12, seed=7))
    c = generate(SynthConfig(3000, 12, seed=8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_social_graph_properties():
    n, d = 5000, 16
    src, dst, ts = generate(SynthConfig(n, d, seed=1))
    edges, rep = normalize_edges(RawEdges(src, dst, ts, "synth", src.size))
    assert rep.duplicates == 0 and rep.self_loops == 0  # the generator emits clean unique edges
    g = CSRGraph.from_edges(edges)
    deg = g.degree
    assert abs(2 * g.num_edges / n - d) < 0.05 * d  # mean degree as asked
    assert deg.max() > 8 * d  # heavy tail: hubs
    assert np.median(deg) < d  # ... and a mass of low-degree users
    G = nx.Graph()
    lo, hi = g.edge_pairs()
    G.add_edges_from(zip(lo.tolist(), hi.tolist(), strict=True))
    clustering = nx.average_clustering(G)
    random_equiv = d / n  # expected clustering of a random graph with this density
    assert clustering > 20 * random_equiv  # triadic closure
    # closing edges come after both edges of their wedge: later edges close more triangles
    assert ts.min() >= 1_600_000_000


def test_write_formats_roundtrip(tmp_path):
    src, dst, ts = generate(SynthConfig(500, 6, seed=3))
    for name in ("e.csv", "e.csv.gz", "e.parquet"):
        p = write_edges(tmp_path / name, src, dst, ts)
        raw = read_edges(p)
        assert np.array_equal(raw.src, src) and np.array_equal(raw.dst, dst) and np.array_equal(raw.ts, ts)


def test_max_degree_makes_hubs_past_the_chung_lu_bound():
    n, d = 4000, 10
    bound = np.sqrt(n * d)

    def degrees(**kw):
        src, dst, _ = generate(SynthConfig(n, d, seed=2, gamma=2.0, **kw))
        return np.bincount(np.concatenate([src, dst]))

    capped, hubby = degrees(), degrees(max_degree=n / 4)
    assert capped.max() < 1.5 * bound  # expected degrees capped at the bound (realised ones spread a little)
    assert hubby.max() > 2 * bound  # hubs of many hundreds of friends
    assert abs(hubby.sum() / n - d) < 0.1 * d  # the mean degree still as asked
