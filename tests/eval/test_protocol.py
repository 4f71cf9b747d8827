import numpy as np
import pytest

from pymk.eval.metrics import hit_matrix, micro_recall, ranking_metrics
from pymk.eval.protocol import split_edges
from pymk.graph.edges import normalize_edges
from pymk.graph.ingest import RawEdges


def _naive_protocol(pairs):
    """The shared README's steps 2-6 written out literally."""
    edges = sorted({(min(a, b), max(a, b)) for a, b in pairs if a != b})
    ids = sorted({x for e in edges for x in e})
    remap = {x: i for i, x in enumerate(ids)}
    edges = np.array([(remap[a], remap[b]) for a, b in edges])
    m = len(edges)
    rng = np.random.default_rng(20261129)
    perm = rng.permutation(m)
    test = edges[perm[: int(0.1 * m)]]
    train = edges[perm[int(0.1 * m):]]
    users = np.unique(test)
    if users.size > 2000:
        users = np.sort(rng.choice(users, 2000, replace=False))
    truth = {int(u): sorted({int(b) for a, b in test if a == u} | {int(a) for a, b in test if b == u})
             for u in users}
    return train, users, truth


@pytest.mark.parametrize(("n", "m"), [(300, 2000), (30000, 25000)])
def test_split_equals_literal_protocol(n, m):
    rng = np.random.default_rng(5)
    src, dst = rng.integers(0, n, m) * 7 + 3, rng.integers(0, n, m) * 7 + 3
    edges, _ = normalize_edges(RawEdges(src, dst, None, "x", m))
    split = split_edges(edges)
    train, users, truth = _naive_protocol(list(zip(src.tolist(), dst.tolist(), strict=True)))
    assert split.users.tolist() == users.tolist()
    assert sorted(zip(split.train.lo.tolist(), split.train.hi.tolist(), strict=True)) == \
        sorted(map(tuple, train.tolist()))
    for b, u in enumerate(split.users.tolist()):
        assert split.truth(b).tolist() == truth[u]


def test_metrics_by_hand():
    lists = np.array([[4, 1, 2, -1], [3, 0, 5, 6]])
    truth_ptr = np.array([0, 2, 3])
    truth_idx = np.array([1, 9, 6])
    hits = hit_matrix(lists, 2, truth_ptr, truth_idx, 10)
    assert hits.tolist() == [[False, True, False, False], [False, False, False, True]]
    m = ranking_metrics(hits, np.diff(truth_ptr), ks=(2, 4), ndcg_ks=(2,))
    assert m["recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["recall@4"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    idcg0 = 1 + 1 / np.log2(3)  # two truth items, K=2
    assert m["ndcg@2"] == pytest.approx(((1 / np.log2(3)) / idcg0 + 0) / 2)
    assert micro_recall(hits, np.diff(truth_ptr)) == pytest.approx(2 / 3)
