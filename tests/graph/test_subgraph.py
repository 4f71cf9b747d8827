import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.graph.edges import EdgeList
from pymk.graph.snapshot import CSRGraph
from pymk.graph.subgraph import upper_values, without_edges
from tests.helpers import nx_graph


def _graph_with_ts(pairs, n, seed):
    p = np.asarray(pairs, np.int64).reshape(-1, 2)
    p = p[p[:, 0] != p[:, 1]]
    p = np.unique(np.sort(p, axis=1), axis=0)
    ts = np.random.default_rng(seed).integers(0, 1000, p.shape[0])
    return CSRGraph.from_edges(EdgeList(np.arange(n, dtype=np.int64) * 3 + 1, p[:, 0].astype(np.int32),
                                        p[:, 1].astype(np.int32), ts)), p, ts


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 25).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=100),
    st.integers(0, 2**31), st.floats(0, 1), st.booleans(), st.booleans())))
def test_without_edges_is_the_graph_minus_those_friendships(case):
    n, pairs, seed, share, narrow, wide_times = case
    g, p, ts = _graph_with_ts(pairs, n, seed)
    if wide_times:  # past int32: narrowing must keep int64
        g.ts[:] += 2**40
        ts = ts + 2**40
    m = g.num_edges
    held = np.random.default_rng(seed).permutation(m)[: int(share * m)]
    sub, lo, hi = without_edges(g, held, narrow_ts=narrow, chunk=7)
    assert sub.ts.dtype == (np.int32 if narrow and not wide_times and m else np.int64)
    # reference: networkx graph minus the held pairs (friendship e = e-th row of the sorted pair list)
    ref = nx_graph(g)
    ref.remove_edges_from(map(tuple, p[np.sort(held)].tolist()))
    assert np.array_equal(np.stack([lo, hi], 1).reshape(-1, 2), p[np.sort(held)].reshape(-1, 2))
    assert sub.num_users == n and np.array_equal(sub.ids, g.ids)
    times = {(int(a), int(b)): int(t) for (a, b), t in zip(p.tolist(), ts.tolist(), strict=True)}
    for u in range(n):
        row = sub.neighbors(u).tolist()
        assert row == sorted(ref.neighbors(u))
        got_ts = sub.ts[sub.indptr[u]:sub.indptr[u + 1]].tolist()
        assert got_ts == [times[(min(u, v), max(u, v))] for v in row]
    assert np.array_equal(upper_values(g, g.ts), ts)  # friendship order is the sorted pair order


def test_without_edges_refuses_bad_numbers():
    g, _, _ = _graph_with_ts([(0, 1), (1, 2)], 3, 0)
    for bad in ([2], [-1], [0, 0]):
        with pytest.raises(ValueError, match="distinct"):
            without_edges(g, np.array(bad))
