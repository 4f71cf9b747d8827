"""The `ridge` feature against a dense solve of its definition, on random graphs (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.candidates.stage1 import Stage1
from pymk.config import CandidatesConfig
from pymk.features.pairs import PAIR_FEATURES, pair_features
from pymk.features.ridge import subgraph_ridge
from pymk.features.store import InProcessFeatureStore, user_feature_table
from tests.helpers import graph_from_pairs


def reference(graph, u: int, cands: list[int], lam: float) -> np.ndarray:
    """-x[c], x = (A_S^2 + lam I)^-1 A_S e_u on S = {u} | N(u) | cands, by a dense solve."""
    indptr, indices = np.asarray(graph.indptr), np.asarray(graph.indices)
    friends = indices[indptr[u]:indptr[u + 1]].tolist()
    S = sorted({u, *friends, *cands})
    pos = {v: i for i, v in enumerate(S)}
    A = np.zeros((len(S), len(S)))
    for v in S:
        for w in indices[indptr[v]:indptr[v + 1]].tolist():
            if w in pos:
                A[pos[v], pos[w]] = 1.0
    x = np.linalg.solve(A @ A + lam * np.eye(len(S)), A[:, pos[u]])
    return np.array([-x[pos[c]] for c in cands])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(5, 60), m=st.integers(0, 300),
       lam=st.sampled_from([1.0, 50.0]))
def test_ridge_matches_dense_solve(seed, n, m, lam):
    rng = np.random.default_rng(seed)
    graph = graph_from_pairs(rng.integers(0, n, (m, 2)), n)
    users = rng.choice(n, size=min(n, 6), replace=False)
    C = 8
    cand = np.full((users.size, C), -1, np.int64)
    count = np.zeros(users.size, np.int64)
    for b, u in enumerate(users):  # any non-self users, friends of u or not, a few per row
        pool = np.setdiff1d(np.arange(n), [u])
        k = int(rng.integers(0, min(C, pool.size) + 1))
        cand[b, :k] = rng.choice(pool, size=k, replace=False)
        count[b] = k
    for batch in (slice(0, 2), slice(0, users.size)):  # the serial (serving) and the parallel path
        got = subgraph_ridge(graph, users[batch], cand[batch], count[batch], lam=lam, iters=500, tol=1e-12)
        for b, u in enumerate(users[batch].tolist()):
            k = int(count[b])
            want = reference(graph, u, cand[b, :k].tolist(), lam)
            np.testing.assert_allclose(got[b, :k], want, rtol=1e-6, atol=1e-9)
            assert (got[b, k:] == 0).all()


def test_ridge_column_and_isolated_user():
    rng = np.random.default_rng(3)
    n = 80
    graph = graph_from_pairs(rng.integers(0, n - 1, (300, 2)), n)  # user n - 1 has no friends
    store = InProcessFeatureStore(user_feature_table(graph), 0)
    batch = Stage1(graph, CandidatesConfig(k=40)).generate(np.array([0, 7, n - 1]))
    X, _ = pair_features(batch, graph, store)
    col = PAIR_FEATURES.index("ridge")
    for b, u in enumerate(batch.users.tolist()):
        k = int(batch.count[b])
        want = reference(graph, u, batch.row(b).tolist(), 50.0) if k else np.zeros(0)
        np.testing.assert_allclose(X[b, :k, col], want, rtol=1e-3, atol=1e-6)  # default 20 CG steps
    assert not X[2, :, col].any()  # no friends: every candidate scores 0
