import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.gnn.config import GnnConfig
from pymk.gnn.model import LinkEncoder, degree_stats, input_features, structural_features
from pymk.gnn.train import infer
from pymk.stream.adjacency import LiveAdjacency
from pymk.stream.refresh import EmbeddingRefresher
from tests.helpers import graph_from_pairs, nx_graph


def _full(model, adj: LiveAdjacency, stats):
    """Reference: full layer-wise inference over the whole current graph, degree standardised by `stats`."""
    g = adj.to_graph()
    struct = input_features(g, model.config)
    struct[:, 0] = structural_features(g.degree, stats)[:, 0]
    return infer(model, g, torch.from_numpy(struct), keep_states=True)


def _model(n, kind="sage", layers=2, skip=False, seed=0):
    torch.manual_seed(seed)
    cfg = GnnConfig(kind=kind, dim=16, layers=layers, fanouts=(10,) * layers, skip=skip)
    return LinkEncoder(n, cfg).eval()


def test_live_adjacency_matches_networkx_after_additions():
    rng = np.random.default_rng(1)
    g = graph_from_pairs(rng.integers(0, 50, (120, 2)), 50)
    ref = nx_graph(g)
    adj = LiveAdjacency(g)
    lo, hi = rng.integers(0, 50, 40), rng.integers(0, 50, 40)
    lo, hi = np.append(lo, [3, 3]), np.append(hi, [3, lo[0]])  # a self-loop and a repeat
    new_lo, new_hi = adj.add(lo, hi)
    expect = []
    for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
        if a != b and not ref.has_edge(a, b):
            ref.add_edge(a, b)
            expect.append((a, b))
    assert list(zip(new_lo.tolist(), new_hi.tolist(), strict=True)) == expect
    nodes = np.array([0, 7, 3, 49, 7])
    ptr, idx = adj.rows(nodes)
    for i, u in enumerate(nodes.tolist()):
        assert sorted(idx[ptr[i]:ptr[i + 1]].tolist()) == sorted(ref.neighbors(u))
    assert np.array_equal(adj.degree, [ref.degree(u) for u in range(50)])
    assert set(adj.ball([0, 7], 2).tolist()) == set(nx.single_source_shortest_path_length(ref, 0, 2)) | set(
        nx.single_source_shortest_path_length(ref, 7, 2))
    with pytest.raises(IndexError, match="outside the graph's 50 users"):
        adj.add([1], [50])


@pytest.mark.parametrize("kind", ["sage", "gcn", "gat"])
@pytest.mark.parametrize("skip", [False, True])
def test_refresh_at_full_radius_equals_full_inference(kind, skip):
    rng = np.random.default_rng(2)
    g = graph_from_pairs(rng.integers(0, 80, (300, 2)), 80)
    model = _model(80, kind, 2, skip)
    adj = LiveAdjacency(g)
    stats = degree_stats(g.degree)
    r = EmbeddingRefresher(model, adj, radius=2)
    for _ in range(3):  # several refreshes in a row stay exact
        out = r.apply(rng.integers(0, 80, 4), rng.integers(0, 80, 4))
        emb, states = _full(model, adj, stats)
        np.testing.assert_allclose(r.emb, emb, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(r.states[0], states[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out.vectors, emb[out.users], rtol=1e-4, atol=1e-5)


def test_radius_one_refreshes_the_endpoints_and_their_neighbours_exactly_and_nobody_else():
    rng = np.random.default_rng(3)
    g = graph_from_pairs(rng.integers(0, 100, (260, 2)), 100)
    model = _model(100)
    adj = LiveAdjacency(g)
    r = EmbeddingRefresher(model, adj, radius=1)
    before = r.emb.copy()
    a, b = 5, 77
    assert not adj.has_edge(a, b)
    out = r.apply([a], [b])
    emb, _ = _full(model, adj, degree_stats(g.degree))
    ring1 = adj.ball([a, b], 1)
    assert np.array_equal(out.users, ring1)
    np.testing.assert_allclose(r.emb[ring1], emb[ring1], rtol=1e-4, atol=1e-5)
    rest = np.setdiff1d(np.arange(100), ring1)
    assert np.array_equal(r.emb[rest], before[rest])
    # the 2-hop ring is what lags (its users read a changed hidden state), and only it
    ring2 = np.setdiff1d(adj.ball([a, b], 2), ring1)
    lag = np.abs(r.emb - emb).max(axis=1) > 1e-5
    assert lag.any() and set(np.flatnonzero(lag)) <= set(ring2.tolist())


@pytest.mark.parametrize("kind", ["sage", "gat"])  # sparse products over everyone; gat: full inference
def test_a_batch_too_big_for_a_local_refresh_runs_full_inference_with_the_same_result(kind):
    rng = np.random.default_rng(5)
    g = graph_from_pairs(rng.integers(0, 90, (250, 2)), 90)
    model = _model(90, kind)
    lo, hi = rng.integers(0, 90, 30), rng.integers(0, 90, 30)
    local = EmbeddingRefresher(model, LiveAdjacency(g), radius=1, full_share=float("inf"))
    full = EmbeddingRefresher(model, LiveAdjacency(g), radius=1, full_share=0.0)
    a, b = local.apply(lo, hi), full.apply(lo, hi)
    assert local.full_passes == 0 and full.full_passes == 1
    assert np.array_equal(a.users, b.users)
    np.testing.assert_allclose(full.emb, local.emb, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(full.states[0], local.states[0], rtol=1e-4, atol=1e-5)


def test_known_and_self_edges_change_nothing():
    g = graph_from_pairs([(0, 1), (1, 2), (2, 3)], 4)
    r = EmbeddingRefresher(_model(4), LiveAdjacency(g), radius=2)
    before = r.emb.copy()
    out = r.apply([1, 2, 3], [0, 2, 2])
    assert out.new_edges == 0 and out.users.size == 0
    assert np.array_equal(r.emb, before)
    with pytest.raises(ValueError, match="radius must be in 0..2"):
        EmbeddingRefresher(_model(4), LiveAdjacency(g), radius=3)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 40), st.integers(0, 120), st.integers(1, 3), st.integers(1, 6), st.integers(0, 10**6))
def test_refresh_matches_full_inference_on_random_graphs(n, m, layers, k, seed):
    rng = np.random.default_rng(seed)
    g = graph_from_pairs(rng.integers(0, n, (m, 2)), n)
    model = _model(n, "sage", layers, seed=seed % 7)
    adj = LiveAdjacency(g)
    r = EmbeddingRefresher(model, adj, radius=layers)
    r.apply(rng.integers(0, n, k), rng.integers(0, n, k))
    emb, states = _full(model, adj, degree_stats(g.degree))
    np.testing.assert_allclose(r.emb, emb, rtol=1e-4, atol=1e-5)
    for mine, ref in zip(r.states, states, strict=True):
        np.testing.assert_allclose(mine, ref, rtol=1e-4, atol=1e-5)


def test_to_graph_is_the_snapshot_plus_the_added_friendships_with_their_times():
    from tests.helpers import synth_graph

    g = synth_graph(300, 6, 2)
    adj = LiveAdjacency(g)
    rng = np.random.default_rng(6)
    lo, hi = rng.integers(0, g.num_users, 25), rng.integers(0, g.num_users, 25)
    new_lo, new_hi = adj.add(lo, hi, ts=np.arange(25) + 2_000_000_000)
    out = adj.to_graph()
    base = nx_graph(g)
    for u in range(g.num_users):
        row = out.neighbors(u)
        assert np.all(np.diff(row) > 0)  # rows stay sorted (the merge kernels rely on it)
        added = {b for a, b in zip(new_lo, new_hi, strict=True) if a == u}
        added |= {a for a, b in zip(new_lo, new_hi, strict=True) if b == u}
        assert set(row.tolist()) == set(base.neighbors(u)) | added
        snap_ts = dict(zip(g.neighbors(u).tolist(), g.ts[g.indptr[u]: g.indptr[u + 1]].tolist(), strict=True))
        got_ts = dict(zip(row.tolist(), out.ts[out.indptr[u]: out.indptr[u + 1]].tolist(), strict=True))
        assert all(got_ts[v] == t for v, t in snap_ts.items())  # the snapshot's times kept
    when = {(int(a), int(b)): int(t) for a, b, t in zip(lo, hi, np.arange(25) + 2_000_000_000, strict=True)}
    for a, b in zip(new_lo.tolist(), new_hi.tolist(), strict=True):
        pos = out.indptr[a] + np.flatnonzero(out.neighbors(a) == b)[0]
        assert out.ts[pos] == when[(a, b)]
    assert out.num_edges == g.num_edges + new_lo.size
