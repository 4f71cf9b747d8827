"""Pair features against brute force; the feature store's two backends agree (real Redis)."""

from __future__ import annotations

import numpy as np
import pytest

from pymk.candidates.stage1 import Stage1
from pymk.config import CandidatesConfig
from pymk.features.pairs import PAIR_FEATURES, pair_features
from pymk.features.store import FeatureStoreError, InProcessFeatureStore, RedisFeatureStore, user_feature_table
from tests.helpers import graph_from_pairs, nx_graph


def _setup(seed=0, n=120):
    rng = np.random.default_rng(seed)
    graph = graph_from_pairs(rng.integers(0, n, (500, 2)), n)
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    store = InProcessFeatureStore(user_feature_table(graph, emb), 8)
    batch = Stage1(graph, CandidatesConfig(k=60)).generate(np.arange(0, n, 5))
    return graph, emb, store, batch


def test_pair_features_match_brute_force():
    graph, emb, store, batch = _setup()
    g = nx_graph(graph)
    X, missing = pair_features(batch, graph, store)
    col = {f: i for i, f in enumerate(PAIR_FEATURES)}
    assert not missing.any()
    for b, u in enumerate(batch.users.tolist()):
        for j, c in enumerate(batch.row(b).tolist()):
            cn = len(set(g[u]) & set(g[c]))
            union = len(set(g[u]) | set(g[c]))
            paths3 = sum(1 for a in g[u] for x in g[a] for y in g[x] if y == c)
            x = X[b, j]
            assert x[col["cn"]] == cn
            assert x[col["jaccard"]] == pytest.approx(cn / union if cn else 0.0, rel=1e-5)
            assert x[col["paths3"]] == pytest.approx(np.log1p(paths3), rel=1e-5)
            assert x[col["deg_c"]] == pytest.approx(np.log1p(g.degree(c)), rel=1e-5)
            assert x[col["emb_dot"]] == pytest.approx(float(emb[u] @ emb[c]), rel=1e-4, abs=1e-4)
        assert (X[b, batch.count[b]:] == 0).all()


def test_new_user_features_are_computed_or_missing_not_an_error():
    graph, emb, _, batch = _setup()
    store = InProcessFeatureStore(user_feature_table(graph, emb)[:100], 8)  # users >= 100 joined later
    X, missing = pair_features(batch, graph, store)
    has_new = np.array([(batch.row(b) >= 100).any() or u >= 100 for b, u in enumerate(batch.users.tolist())])
    assert (missing == has_new).all() and has_new.any()
    new = batch.valid & (batch.cand >= 100)
    # degrees are computed on demand from the graph; what only the stored row has (embeddings) is missing
    deg = np.asarray(graph.degree)[np.where(new, batch.cand, 0)]
    np.testing.assert_allclose(X[:, :, PAIR_FEATURES.index("deg_c")][new], np.log1p(deg[new]), rtol=1e-6)
    assert np.isnan(X[:, :, PAIR_FEATURES.index("emb_dot")][new]).all()


def test_redis_store_equals_in_process_in_one_round_trip(redis_server):
    import redis

    graph, emb, store, batch = _setup(seed=1)
    client = redis.Redis.from_url(redis_server.url)
    rs = RedisFeatureStore(client, "pymk:test:feat", store.width, emb_dim=8)
    assert rs.publish(store.table) == graph.num_users
    users = np.array([3, 0, 119, -1, 7, 3])
    np.testing.assert_array_equal(rs.fetch(users), store.fetch(users))
    X1, _ = pair_features(batch, graph, store)
    before = rs.round_trips
    X2, _ = pair_features(batch, graph, rs)
    assert rs.round_trips - before == 1  # the user and all its candidates: one MGET
    np.testing.assert_array_equal(X1, X2)
    client.set(rs.key(5), b"\x00" * 12)
    with pytest.raises(FeatureStoreError, match="12 bytes"):
        rs.fetch(np.array([5]))


def test_store_refuses_other_columns(tmp_path):
    graph, emb, store, _ = _setup()
    store.save(tmp_path)
    assert InProcessFeatureStore.load(tmp_path, graph.num_users).width == store.width
    meta = (tmp_path / "features.json").read_text().replace('"first_ts"', '"signup"')
    (tmp_path / "features.json").write_text(meta)
    with pytest.raises(FeatureStoreError, match="columns"):
        InProcessFeatureStore.load(tmp_path, graph.num_users)
