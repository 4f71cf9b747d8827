import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.ranking.explain import format_sample, mutual_sample
from tests.helpers import graph_from_pairs, nx_graph


@settings(max_examples=40, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, 29), st.integers(0, 29)), min_size=1, max_size=150))
def test_mutual_sample_is_the_least_connected_common_friends(pairs):
    graph = graph_from_pairs(pairs, 30)
    g = nx_graph(graph)
    users = np.arange(30)
    cand = np.tile(np.arange(30), (30, 1))
    out = mutual_sample(graph, users, cand, np.full(30, 30), m=3)
    for u in range(30):
        for c in range(30):
            common = sorted(set(g[u]) & set(g[c]), key=lambda v: (g.degree(v), v))[:3]
            assert out[u, c][out[u, c] >= 0].tolist() == common


def test_format_sample_uses_external_ids():
    ids = np.array([100, 110, 120])
    assert format_sample(ids, np.array([[2, 0, -1], [-1, -1, -1]])) == ["120;100", ""]
