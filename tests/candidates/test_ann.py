"""ANN index: fidelity against exact search, sharded == single, updates against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.candidates.ann import (
    AnnError,
    AnnIndex,
    ShardedAnnIndex,
    build_ann,
    calibrate,
    load_ann,
    recall_against_exact,
    search_users,
)
from pymk.candidates.embedding import exact_search
from pymk.config import AnnConfig
from tests.helpers import graph_from_pairs


def clustered(n: int, d: int, seed: int = 0, norm_spread: float = 0.0) -> np.ndarray:
    """Embeddings with cluster structure, like a trained model's (uniform noise makes every ANN look bad);
    norm_spread > 0 scales rows by log-normal factors, as GNN embeddings of hubs and loners differ."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(2, n // 50), d))
    x = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, d))
    return (x * rng.lognormal(0.0, norm_spread, n)[:, None]).astype(np.float32)


def brute(vectors: dict[int, np.ndarray], q: np.ndarray, k: int) -> list[int]:
    users = np.array(sorted(vectors), np.int64)
    if users.size == 0:
        return []
    scores = np.stack([vectors[u] for u in users]) @ q
    return users[np.argsort(-scores, kind="stable")[:k]].tolist()


@pytest.mark.parametrize("spread", [0.0, 0.5])
@pytest.mark.parametrize("kind", ["hnsw", "ivf_flat", "ivf_sq8"])
def test_calibrated_index_reaches_recall_at_100(kind, spread):
    # spread 0.5: an HNSW graph built on raw inner products strands small-norm users (recall ~0.8)
    emb = clustered(6000, 32, norm_spread=spread)
    index = AnnIndex.build(emb, None, AnnConfig(), kind=kind)
    cal = calibrate(index, emb, AnnConfig())
    queries = np.arange(1, 6000, 37)  # other users than calibration's sample, mostly
    assert cal["recall"] >= 0.97
    assert recall_against_exact(index, emb, queries, 100) >= 0.95


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_sq8", "hnsw"])
def test_calibration_from_a_previous_setting_finds_the_smallest_that_meets_the_target(kind):
    emb = clustered(6000, 32, norm_spread=0.5)
    cfg = AnnConfig()
    index = AnnIndex.build(emb, None, cfg, kind=kind)
    fresh = calibrate(index, emb, cfg)
    floor = (cfg.nprobe or 1) if kind.startswith("ivf") else cfg.hnsw_ef_search
    limit = index.index.nlist if kind.startswith("ivf") else 4096

    def meets(p):
        index.set_search_param(p)
        q = np.sort(np.random.default_rng(cfg.seed).choice(6000, min(cfg.calibrate_queries, 6000), replace=False))
        return recall_against_exact(index, emb, q, cfg.calibrate_k) >= cfg.target_recall

    # from the setting a fresh calibration found: the same answer (its half failed on the way up)
    assert calibrate(index, emb, cfg, start=fresh["param"])["param"] == fresh["param"]
    # from far above: down by halving to a setting that meets the target while its half does not
    got = calibrate(index, emb, cfg, start=limit)
    assert index.search_param == got["param"]  # the index is left at the setting it reports
    assert meets(got["param"]) and (got["param"] == floor or not meets(max(floor, got["param"] // 2)))
    # from below (a version whose vectors moved): up by doubling to one that meets it
    low = calibrate(index, emb, cfg, start=floor)
    assert low["recall"] >= cfg.target_recall or low["param"] == limit
    assert low["param"] == fresh["param"]


def test_exact_kind_matches_torch_exact_search():
    emb = clustered(800, 16, seed=3)
    index = AnnIndex.build(emb, None, AnnConfig(), kind="exact")
    queries = np.arange(0, 800, 13)
    s_ref, i_ref = exact_search(emb, queries, 40)
    s, i = search_users(index, emb, queries, 40, None)
    np.testing.assert_allclose(s, s_ref, rtol=1e-5, atol=1e-4)
    assert (i == i_ref).mean() > 0.99  # ties may order differently


@pytest.mark.parametrize("kind", ["exact", "ivf_flat", "ivf_sq8", "ivf_pq"])
def test_sharded_index_returns_the_single_index_results(kind):
    emb = clustered(3000, 32, seed=1)
    shard_of = np.random.default_rng(0).integers(0, 4, 3000)
    cfg = AnnConfig(nprobe=8, pq_m=8)
    single = AnnIndex.build(emb, None, cfg, kind=kind)
    sharded = ShardedAnnIndex.build(emb, shard_of, cfg, kind=kind)
    assert sharded.ntotal == single.ntotal == 3000
    q = emb[::29]
    s1, l1 = single.search(q, 50)
    s2, l2 = sharded.search(q, 50)
    np.testing.assert_allclose(s1, s2, rtol=1e-5, atol=1e-5)
    # same users; positions may swap only between equal scores
    assert all(set(a) == set(b) or np.allclose(np.sort(sa), np.sort(sb), atol=1e-5)
               for a, b, sa, sb in zip(l1.tolist(), l2.tolist(), s1, s2, strict=True))
    assert (l1 == l2).mean() > 0.99


def test_sharded_hnsw_keeps_recall():
    emb = clustered(4000, 32, seed=2)
    shard_of = np.arange(4000) % 3
    sharded = ShardedAnnIndex.build(emb, shard_of, AnnConfig(), kind="hnsw")
    calibrate(sharded, emb, AnnConfig())
    assert recall_against_exact(sharded, emb, np.arange(0, 4000, 41), 100) >= 0.95


def test_k_larger_than_users_is_capped():
    emb = clustered(30, 8)
    for index in (AnnIndex.build(emb, None, AnnConfig(), kind="hnsw"),
                  ShardedAnnIndex.build(emb, np.arange(30) % 2, AnnConfig(), kind="exact")):
        s, lab = index.search(emb[:3], 1000)
        assert lab.shape == (3, 30) and set(lab[0].tolist()) == set(range(30))
        s, i = search_users(index, emb, np.array([0, 5]), 10_000, None)
        assert i.shape == (2, 30) and (i[:, :29] >= 0).all() and (i[:, 29] == -1).all()


def test_search_users_excludes_self_and_friends():
    rng = np.random.default_rng(5)
    n = 300
    graph = graph_from_pairs(rng.integers(0, n, (1500, 2)), n)
    emb = clustered(n, 16, seed=5)
    index = AnnIndex.build(emb, None, AnnConfig(), kind="exact")
    users = np.arange(0, n, 7)
    _, got = search_users(index, emb, users, 25, graph)
    _, ref = exact_search(emb, users, 25, graph)
    for u, row, r in zip(users.tolist(), got, ref, strict=True):
        friends = set(graph.neighbors(u).tolist())
        assert u not in row and not friends & set(row.tolist())
        assert len(set(row.tolist()) & set(r.tolist())) >= 24  # ties at the boundary may differ


ops = st.lists(st.tuples(st.sampled_from(["add", "remove", "replace"]), st.integers(0, 59),
                         st.integers(0, 2**31 - 1)), min_size=1, max_size=40)


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf_flat"])
@settings(max_examples=25, deadline=None)
@given(ops=ops)
def test_updates_match_a_brute_force_reference(kind, ops):
    """Any sequence of add / remove / replace leaves the index answering like brute force over the live
    vectors (ivf_flat probing every cell and HNSW on 60 points are exact)."""
    d = 8
    base = clustered(40, d, seed=9)
    cfg = AnnConfig(nlist=4, nprobe=4, hnsw_ef_search=200, rebuild_dead_share=0.3)
    index = AnnIndex.build(base, None, cfg, kind=kind)
    live = {u: base[u] for u in range(40)}
    for op, user, seed in ops:
        vec = np.random.default_rng([seed, user]).normal(size=d).astype(np.float32)  # no ties across users
        if op == "add" and user not in live:
            index.add([user], vec[None])
            live[user] = vec
        elif op == "add":
            with pytest.raises(AnnError, match="already in the index"):
                index.add([user], vec[None])
        elif op == "remove":
            assert index.remove([user]) == (1 if user in live else 0)
            live.pop(user, None)
        else:
            index.replace([user], vec[None])
            live[user] = vec
    assert index.ntotal == len(live)
    assert index.contains(np.arange(60)).tolist() == [u in live for u in range(60)]
    for q in np.random.default_rng(0).normal(size=(5, d)).astype(np.float32):
        _, labels = index.search(q[None], 10)
        assert labels[0].tolist() == brute(live, q, 10)


def test_hnsw_tombstones_are_compacted():
    emb = clustered(500, 8)
    index = AnnIndex.build(emb, None, AnnConfig(rebuild_dead_share=0.2), kind="hnsw")
    index.remove(np.arange(90))
    assert index.dead == 90 and index.ntotal == 410
    _, labels = index.search(emb[:20], 50)
    assert (labels >= 90).all()
    index.remove(np.arange(90, 120))  # 120 dead of 500 slots passes 0.2: rebuilt from the live vectors
    assert index.dead == 0 and index.ntotal == 380 and index.index.ntotal == 380
    _, labels = index.search(emb[:20], 50)
    assert (labels >= 120).all()


def test_save_load_roundtrip_and_mismatch_errors(tmp_path):
    emb = clustered(2000, 16)
    shard_of = np.arange(2000) % 3
    summary = build_ann(emb, AnnConfig(kind="ivf_sq8"), tmp_path / "ann", shard_of=shard_of, log=lambda s: None)
    assert summary["shards"] == 3 and summary["calibrated_recall"] >= 0.97
    index = load_ann(tmp_path / "ann", emb)
    assert isinstance(index, ShardedAnnIndex) and index.search_param == summary["search_param"]
    assert recall_against_exact(index, emb, np.arange(0, 2000, 17), 100) >= 0.95
    with pytest.raises(AnnError, match="16-d vectors.*32-d"):
        load_ann(tmp_path / "ann", clustered(2000, 32))
    with pytest.raises(AnnError, match="2000 users.*1999 rows"):
        load_ann(tmp_path / "ann", emb[:-1])
    other = emb.copy()
    other[0] += 1
    with pytest.raises(AnnError, match="other embeddings"):
        load_ann(tmp_path / "ann", other)
    with pytest.raises(AnnError, match="no ANN index"):
        load_ann(tmp_path, emb)


def test_bad_vectors_are_refused():
    index = AnnIndex.build(clustered(50, 8), None, AnnConfig(), kind="exact")
    with pytest.raises(AnnError, match="dimension 4"):
        index.add([60], np.zeros((1, 4), np.float32))
    with pytest.raises(AnnError, match=r"queries must be \(B, 8\)"):
        index.search(np.zeros((2, 5), np.float32), 3)
    with pytest.raises(AnnError, match=">= 0"):
        index.add([-1], np.zeros((1, 8), np.float32))


def test_ivf_shards_trained_apart_are_refused():
    emb = clustered(2000, 16)
    a = AnnIndex.build(emb[:1000], np.arange(1000), AnnConfig(seed=1), kind="ivf_flat")
    b = AnnIndex.build(emb[1000:], np.arange(1000, 2000), AnnConfig(seed=2), kind="ivf_flat")
    with pytest.raises(AnnError, match="trained apart"):
        ShardedAnnIndex([a, b], np.arange(2000) // 1000)


@pytest.mark.parametrize("sharded", [False, True])
@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf_flat"])
@settings(max_examples=20, deadline=None)
@given(gone=st.sets(st.integers(0, 39), max_size=10), born=st.sets(st.integers(0, 60), max_size=8),
       fresh=st.sets(st.integers(0, 39), max_size=10), seed=st.integers(0, 2**31 - 1))
def test_relabel_in_place_answers_like_brute_force_over_the_next_versions_users(kind, sharded, gone, born, fresh,
                                                                                 seed):
    """The next model version's index made in place (`pymk update`): erased users removed, every user renamed
    to its new dense index (users who joined are slotted in between, by id), changed vectors replaced, new
    users added: answers as brute force over the next version's vectors, by the new labels."""
    d = 8
    old_ids = np.arange(0, 80, 2)  # 40 users with even ids; new users get odd ids
    base = clustered(40, d, seed=9)
    cfg = AnnConfig(nlist=4, nprobe=4, hnsw_ef_search=200, rebuild_dead_share=0.9)
    if sharded:
        index = ShardedAnnIndex.build(base, np.arange(40) % 3, cfg, kind=kind)
    else:
        index = AnnIndex.build(base, None, cfg, kind=kind)
    kept_ids = np.delete(old_ids, sorted(gone))
    new_ids = np.union1d(kept_ids, 2 * np.array(sorted(born), np.int64) + 1)
    remap = np.where(np.isin(old_ids, kept_ids), np.searchsorted(new_ids, old_ids), -1)
    rng = np.random.default_rng(seed)
    emb = np.zeros((new_ids.size, d), np.float32)
    kept = remap >= 0
    emb[remap[kept]] = base[kept]
    changed = np.zeros(new_ids.size, bool)
    changed[~np.isin(new_ids, old_ids)] = True  # the new users
    changed[remap[[u for u in fresh if remap[u] >= 0]]] = True
    emb[changed] = rng.normal(size=(int(changed.sum()), d)).astype(np.float32)

    index.remove(np.flatnonzero(~kept))
    if sharded:
        index.relabel(remap, np.arange(new_ids.size) % 3)
    else:
        index.relabel(remap)
    index.replace(np.flatnonzero(changed), emb[changed])
    assert index.ntotal == new_ids.size
    assert index.contains(np.arange(new_ids.size + 5)).tolist() == [u < new_ids.size for u in range(new_ids.size + 5)]
    live = {u: emb[u] for u in range(new_ids.size)}
    for q in rng.normal(size=(5, d)).astype(np.float32):
        _, labels = index.search(q[None], 10)
        assert labels[0].tolist() == brute(live, q, 10)


def test_relabel_refuses_a_user_with_no_new_label():
    index = AnnIndex.build(clustered(20, 4), None, AnnConfig(), kind="exact")
    with pytest.raises(AnnError, match="user 3 of the index has no new label"):
        index.relabel(np.where(np.arange(20) == 3, -1, np.arange(20)))
