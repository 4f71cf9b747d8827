"""Per-user data on the shard servers: each holds only its users' embeddings, ANN shard and feature rows, and
a ranking tier that holds none of them answers like the model that holds them all (embedding candidates,
the learned ranker's features and scores), for an exact index and for an IVF index sharded by home."""

import numpy as np
import pytest

from pymk.candidates.ann import merge_nearest
from pymk.config import PymkConfig
from pymk.graph.edges import EdgeList
from pymk.pipeline.build import build_from_edges
from pymk.pipeline.model import Model
from pymk.serving import batch
from pymk.serving.shard_users import ShardUsers

USERS = 500


def _build(path, kind: str):
    from pymk.graph.synth import SynthConfig, generate

    src, dst, _ = generate(SynthConfig(USERS, 8, seed=11))
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    keys = np.unique(lo * np.int64(USERS) + hi)
    keys = keys[keys // USERS != keys % USERS]
    cfg = PymkConfig()
    cfg.sharding.shards, cfg.sharding.method = 3, "hash"
    cfg.ranker.kind = "lightgbm"
    cfg.gnn.enabled, cfg.gnn.epochs, cfg.gnn.dim, cfg.gnn.val_k = True, 1, 16, 20
    cfg.candidates.ann.kind = kind
    if kind.startswith("ivf"):
        cfg.candidates.ann.nlist = 8
    cfg.candidates.ppr.enabled = False  # PPR's push order differs by design (test_tier.py bounds it)
    edges = EdgeList(np.arange(USERS, dtype=np.int64), (keys // USERS).astype(np.int32),
                     (keys % USERS).astype(np.int32), np.arange(keys.size, dtype=np.int64))
    return build_from_edges(edges, path, cfg, log=lambda s: None)


@pytest.fixture(scope="module")
def ivf_dir(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("tier-users-ivf") / "m", "ivf_flat")


@pytest.fixture(scope="module", params=["exact", "ivf_flat"])
def model_dir(request, tmp_path_factory):
    if request.param == "ivf_flat":
        return request.getfixturevalue("ivf_dir")
    return _build(tmp_path_factory.mktemp(f"tier-users-{request.param}") / "m", request.param)


def test_each_server_holds_only_its_users_rows(model_dir):
    """Every shard server's embeddings and feature rows are those of the users homed on it, nothing else;
    together they are the model's tables; its ANN shard indexes exactly its users."""
    ref = Model.load(model_dir)
    tier = Model.load(model_dir, tier=True)
    assert tier.embeddings is None and tier.ann is None  # the tier holds none of it
    emb = np.load(model_dir / "gnn" / "embeddings.npy")
    table = np.load(model_dir / "features" / "users.npy")
    seen = []
    for s, server in enumerate(tier.servers.servers):
        u = server.users
        assert np.array_equal(u.homed, np.flatnonzero(ref.plan.home == s))
        # the build wrote each shard's rows to its own files, which the server read
        assert np.array_equal(np.load(model_dir / "gnn" / "shards" / f"{s}.npy"), emb[u.homed])
        assert np.array_equal(np.load(model_dir / "features" / "shards" / f"{s}.npy"), table[u.homed], equal_nan=True)
        assert np.array_equal(u.emb, emb[u.homed])
        assert np.array_equal(u.features(u.homed), table[u.homed], equal_nan=True)
        # each vector held once: the feature rows' trailing embedding columns are served from `emb`
        assert u.feat.shape[1] == table.shape[1] - emb.shape[1] and u.tail_from_emb.all()
        assert set(u.ann.labels[u.ann.alive].tolist()) == set(u.homed.tolist())
        seen.append(u.homed)
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(USERS))
    assert tier.served["emb_dim"] == emb.shape[1] and tier.served["feature_width"] == table.shape[1]


def test_shard_rows_of_another_table_are_refused_by_name(ivf_dir, tmp_path):
    """Embeddings replaced after the build (same shape, other values): a shard server refuses its rows file,
    naming it, rather than serving rows of another table."""
    import shutil

    from pymk.serving.shard_users import ShardUsersError

    m = tmp_path / "m"
    shutil.copytree(ivf_dir, m)
    emb = np.load(m / "gnn" / "embeddings.npy")
    np.save(m / "gnn" / "embeddings.npy", emb[::-1].copy())
    with pytest.raises(ShardUsersError, match=r"gnn/shards/rows.json: rows of another embeddings.npy"):
        Model.load(m, tier=True)


def test_the_tier_answers_like_the_whole_model_with_embeddings_and_a_learned_ranker(model_dir):
    """Stage 1 (friends-of-friends, embedding, popularity), the pair features, the scores and the top 20 of the
    tier equal the whole-graph model's for every user; the embedding source alone too."""
    ref = Model.load(model_dir)
    tier = Model.load(model_dir, tier=True)
    assert ref.ranker_kind == tier.ranker_kind == "lightgbm"
    users = np.arange(USERS)
    a, b = batch.recommend(ref, users, 20), batch.recommend(tier, users, 20)
    for f in ("cand", "mutual", "count", "source", "sample"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert np.allclose(a.score, b.score, rtol=1e-5, atol=1e-6)
    ca, cb = ref.candidates(users[:100], k=150), tier.candidates(users[:100], k=150)
    assert np.array_equal(ca.cand, cb.cand) and np.array_equal(ca.source, cb.source)
    assert cb.rows is not None and cb.rows.width == ref.features.width
    xa, xb = ref.ranker.features(ca), tier.ranker.features(cb)
    assert np.allclose(xa, xb, rtol=1e-5, atol=1e-6, equal_nan=True)
    sa, ia = ref.embedding_candidates(users, 40)
    sb, ib = tier.embedding_candidates(users, 40)
    assert np.array_equal(ia, ib) and np.allclose(sa, sb, rtol=1e-5, atol=1e-5)
    assert (ib >= 0).sum() > 0.9 * ib.size


def test_on_ray_servers_the_tier_answers_alike_and_a_dead_shard_is_left_out_and_named(ivf_dir):
    """The same over Ray actors on a 3-node cluster (each server reports the bytes of its users' rows); then
    a shard server killed for good: the embedding source answers from the other shards' indexes, never one
    of the dead shard's users, and the loss is named. Servers started for a model that holds the whole graph hold
    no user rows and answer alike."""
    ray = pytest.importorskip("ray")
    from pymk.graph.sharded import load_plan
    from pymk.serving.shard_router import ray_servers
    from tests.ray_cluster import local_cluster

    with local_cluster():
        plan = load_plan(ivf_dir / "graph")
        router = ray_servers(ivf_dir, plan, timeout_s=10.0)
        try:
            ref, tier = Model.load(ivf_dir), Model.load(ivf_dir, tier=True, servers=router)
            users = np.arange(0, USERS, 3)
            a, b = batch.recommend(ref, users, 20), batch.recommend(tier, users, 20)
            assert np.array_equal(a.cand, b.cand) and np.allclose(a.score, b.score, rtol=1e-5, atol=1e-6)
            emb = np.load(ivf_dir / "gnn" / "embeddings.npy")
            table = np.load(ivf_dir / "features" / "users.npy")
            emb_bytes = emb.nbytes
            table_bytes = table[:, :-emb.shape[1]].nbytes  # the feature rows' embedding columns come from `emb`
            for s, st in enumerate(router.server_stats()):
                homed = int((plan.home == s).sum())
                assert st["user_rows_bytes"] == (emb_bytes + table_bytes) // USERS * homed
            assert router.take_degraded() == []
            dead = 1
            ray.kill(router.servers[dead], no_restart=True)
            _, idx = tier.embedding_candidates(users, 30)
            assert (idx >= 0).any() and not np.isin(idx[idx >= 0], np.flatnonzero(plan.home == dead)).any()
            assert f"shard {dead}" in router.take_degraded()
        finally:
            router.close()
        # servers for a model that holds the whole graph (no tier) load lists only: it reads its own rows
        whole = ray_servers(ivf_dir, plan, timeout_s=10.0, users=False)
        try:
            assert [st["user_rows_bytes"] for st in whole.server_stats()] == [0] * plan.shards
            c = batch.recommend(Model.load(ivf_dir, servers=whole), users, 20)
            assert np.array_equal(a.cand, c.cand) and np.allclose(a.score, c.score, rtol=1e-5, atol=1e-6)
        finally:
            whole.close()


def test_merging_the_shards_nearest_lists_keeps_the_score_order_and_skips_a_lost_shard():
    """The merge of the shards' nearest lists keeps the order by score; a shard that did not answer (None)
    is left out."""
    a = (np.array([[0.9, 0.5]], np.float32), np.array([[4, 7]]))
    b = (np.array([[0.95, 0.1]], np.float32), np.array([[2, 9]]))
    s, lab = merge_nearest([a, None, b], 3)
    assert lab.tolist() == [[2, 4, 7]] and np.allclose(s, [[0.95, 0.9, 0.5]])
    assert merge_nearest([None], 3) == (None, None)


def test_exact_search_on_a_shard_is_the_brute_force_top_k():
    rng = np.random.default_rng(0)
    homed = np.sort(rng.choice(1000, 120, replace=False))
    emb = rng.normal(size=(120, 8)).astype(np.float32)
    has = rng.random(120) > 0.2
    u = ShardUsers(homed, emb, has)
    q = rng.normal(size=(5, 8)).astype(np.float32)
    s, lab = u.search(q, 10)
    for r in range(5):
        sc = emb[has] @ q[r]
        want = homed[has][np.argsort(-sc)[:10]]
        assert lab[r].tolist() == want.tolist()
        assert np.allclose(s[r], np.sort(sc)[::-1][:10], rtol=1e-5)
    vec, ok = u.vectors(np.array([homed[0], homed[1], 5000, -1]))
    assert ok.tolist() == [bool(has[0]), bool(has[1]), False, False]
    assert np.array_equal(vec[0], emb[0] if has[0] else np.zeros(8))


def test_feature_rows_share_the_embedding_columns_only_when_they_are_the_embeddings():
    """A server keeps one copy of each vector when the feature rows end with exactly the embedding rows
    (NaN where a user has no embedding), and serves the same rows; rows whose trailing columns are other
    vectors are kept whole."""
    from pymk.serving.shard_users import share_embedding_columns

    rng = np.random.default_rng(3)
    h, d = 9, 4
    emb = rng.normal(size=(h, d)).astype(np.float32)
    in_emb = np.arange(h) < 7  # two users joined after the embeddings were trained
    in_feat = np.arange(h) < 8  # one after the feature table
    emb[~in_emb] = 0.0
    feat = np.full((h, 3 + d), np.nan, np.float32)
    feat[in_feat, :3] = rng.normal(size=(int(in_feat.sum()), 3))
    feat[in_feat & in_emb, 3:] = emb[in_feat & in_emb]
    lead, tail = share_embedding_columns(feat, d, emb, in_emb, in_feat)
    assert lead.shape == (h, 3) and tail.tolist() == (in_emb & in_feat).tolist()
    u = ShardUsers(np.arange(h) * 2, emb, in_emb, None, lead, d, tail)
    asked = np.array([0, 4, 12, 14, 16, 5, -1])  # homed users, then users homed elsewhere
    want = np.full((asked.size, 3 + d), np.nan, np.float32)
    want[:5] = feat[asked[:5] // 2]
    assert np.array_equal(u.features(asked), want, equal_nan=True)
    assert u.describe()["feature_width"] == 3 + d
    other = feat.copy()
    other[0, 3] += 1.0  # the feature table holds another vector for one user
    kept, none = share_embedding_columns(other, d, emb, in_emb, in_feat)
    assert none is None and kept is other
