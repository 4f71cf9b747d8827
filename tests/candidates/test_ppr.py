"""Personalized PageRank source against networkx's power iteration."""

from __future__ import annotations

import networkx as nx
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.candidates.ppr import personalized_pagerank
from tests.helpers import graph_from_pairs, nx_graph

graphs = st.integers(4, 40).flatmap(
    lambda n: st.tuples(st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)),
                                             min_size=1, max_size=4 * n)))


@settings(max_examples=40, deadline=None)
@given(g=graphs, alpha=st.sampled_from([0.15, 0.5]), beta=st.sampled_from([0.0, 0.5, 1.0]))
def test_push_matches_power_iteration(g, alpha, beta):
    n, pairs = g
    graph = graph_from_pairs(pairs, n)
    ref_g = nx_graph(graph)
    users = np.arange(n)
    cand, score, count = personalized_pagerank(graph, users, n, alpha=alpha, eps=1e-12, beta=beta)
    deg = np.maximum(np.asarray(graph.degree), 1)
    for u in range(n):
        if ref_g.degree(u) == 0:
            assert count[u] == 0
            continue
        pr = nx.pagerank(ref_g, alpha=1 - alpha, personalization={u: 1.0}, tol=1e-14, max_iter=10_000)
        excluded = set(ref_g[u]) | {u}
        expect = {v: pr[v] / deg[v] ** beta for v in ref_g if v not in excluded and pr[v] > 1e-9}
        got = dict(zip(cand[u, : count[u]].tolist(), score[u, : count[u]].tolist(), strict=True))
        assert set(expect) <= set(got)  # push may also keep mass-1e-12 tails the tolerance drops
        for v, s in expect.items():
            assert abs(got[v] - s) < 1e-7
        row = score[u, : count[u]]
        assert (np.diff(row) <= 1e-15).all()  # best first


def test_blocked_k_and_unknown_users():
    rng = np.random.default_rng(0)
    graph = graph_from_pairs(rng.integers(0, 80, (300, 2)), 80)
    full, _, n_full = personalized_pagerank(graph, [3, -1, 7], 10)
    assert n_full[1] == 0 and (full[1] == -1).all()
    blocked, _, _ = personalized_pagerank(graph, [3, -1, 7], 10, blocked=[full[0, :2], None, []])
    assert not set(full[0, :2]) & set(blocked[0].tolist()) and blocked[0, 0] == full[0, 2]
    one, _, _ = personalized_pagerank(graph, [7], 10)  # the single-user path shares a thread workspace
    np.testing.assert_array_equal(one[0], full[2])
    again, _, _ = personalized_pagerank(graph, [7], 10)
    np.testing.assert_array_equal(again, one)
    big, _, n_big = personalized_pagerank(graph, [3], 10_000)
    assert big.shape == (1, 80) and n_big[0] <= 80 - 1 - graph.degree[3]


def test_reaches_beyond_two_hops_on_a_path():
    graph = graph_from_pairs([(i, i + 1) for i in range(9)], 10)
    cand, _, count = personalized_pagerank(graph, [0], 5)
    assert cand[0, : count[0]].tolist()[:3] == [2, 3, 4]  # nearest first; 3 and 4 are 3 and 4 hops away
