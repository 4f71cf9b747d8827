"""The learned ranker: leakage-free training data, save/load with its feature list, model integration."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.config import PymkConfig
from pymk.features.pairs import PAIR_FEATURES
from pymk.graph.synth import SynthConfig, generate
from pymk.ranking.learned import (
    LearnedRanker,
    RankerError,
    internal_graph,
    internal_split,
    train_ranker,
    training_data,
)
from tests.helpers import nx_graph


def _graph(ts=True):
    from pymk.graph.edges import EdgeList
    from pymk.graph.snapshot import CSRGraph

    src, dst, t = generate(SynthConfig(600, 10, seed=3))
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    keys, first = np.unique(lo * 1000 + hi, return_index=True)
    ids = np.arange(600, dtype=np.int64)
    edges = EdgeList(ids, (keys // 1000).astype(np.int32), (keys % 1000).astype(np.int32),
                     t[first].astype(np.int64) if ts else None)
    return CSRGraph.from_edges(edges)


def _config():
    cfg = PymkConfig()
    cfg.ranker.kind = "lightgbm"
    cfg.ranker.rounds = 30
    cfg.candidates.k = 100
    return cfg


def _edge_times(graph, lo, hi) -> np.ndarray:
    """Reference: each (lo, hi) edge's timestamp found by searching lo's CSR row for hi."""
    out = np.empty(lo.size, np.int64)
    for i, (x, y) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
        row = graph.indices[graph.indptr[x]:graph.indptr[x + 1]]
        out[i] = graph.ts[graph.indptr[x] + int(np.searchsorted(row, y))]
    return out


def test_internal_split_holds_out_the_latest_edges():
    g = _graph()
    a, b, ha, hb = internal_split(g, holdout=0.1)
    assert ha.size == round(0.1 * g.num_edges) and a.size + ha.size == g.num_edges
    lo, hi, ts = g.edge_pairs(with_ts=True)
    assert np.array_equal(ts, _edge_times(g, lo, hi))  # each edge's time, read in place
    sub, _, _ = internal_graph(g, PymkConfig())
    s_lo, s_hi, s_ts = sub.edge_pairs(with_ts=True)
    assert np.array_equal(s_ts, _edge_times(g, s_lo, s_hi))  # G' keeps the times of the edges that stay

    t_kept = _edge_times(g, a.astype(np.int64), b.astype(np.int64))
    t_out = _edge_times(g, ha.astype(np.int64), hb.astype(np.int64))
    assert t_out.min() >= t_kept.max()
    r = internal_split(_graph(ts=False), holdout=0.2, seed=1)
    assert r[2].size == round(0.2 * g.num_edges)


def test_training_labels_are_held_out_friends_never_seen_by_features():
    g = _graph()
    cfg = _config()
    cfg.ranker.splits, cfg.ranker.negatives = 1, 1.0  # whole lists of one split: rows align with Stage 1
    data = training_data(g, cfg, log=lambda s: None)
    a, b, ha, hb = internal_split(g, holdout=cfg.ranker.holdout, seed=cfg.ranker.seed,
                                  by_time=cfg.ranker.split == "time")
    held = set(zip(ha.tolist(), hb.tolist(), strict=True)) | set(zip(hb.tolist(), ha.tolist(), strict=True))
    assert data["y"].sum() > 0 and data["X"].shape[1] == len(PAIR_FEATURES)
    # every positive is a held-out friendship, and its common-neighbour feature counts G' only
    sub = nx_graph(g)
    sub.remove_edges_from(held)
    starts = np.concatenate([[0], np.cumsum(data["group"])])
    cn_col = 0
    found = 0
    from pymk.candidates.stage1 import Stage1
    from pymk.graph.edges import EdgeList
    from pymk.graph.snapshot import CSRGraph

    gp = CSRGraph.from_edges(EdgeList(np.asarray(g.ids), a.astype(np.int32), b.astype(np.int32)))
    for i, u in enumerate(data["users"][:40].tolist()):
        batch = Stage1(gp, cfg.candidates).generate([u])
        row = batch.row(0)
        y = data["y"][starts[i]:starts[i + 1]]
        assert {int(c) for c in row[y > 0]} <= {v for (x, v) in held if x == u}
        for c, x in zip(row.tolist(), data["X"][starts[i]:starts[i + 1]], strict=True):
            assert x[cn_col] == len(set(sub[u]) & set(sub[c]))
            found += 1
    assert found > 0


def test_negatives_are_subsampled_and_every_positive_kept():
    g = _graph()
    cfg = _config()
    cfg.ranker.splits, cfg.ranker.negatives = 1, 1.0
    full = training_data(g, cfg, log=lambda s: None)
    cfg.ranker.negatives = 0.2
    part = training_data(g, cfg, log=lambda s: None)
    assert part["y"].sum() == full["y"].sum()  # all held-out friends stay
    neg_full, neg_part = (full["y"] == 0).sum(), (part["y"] == 0).sum()
    assert 0.15 < neg_part / neg_full < 0.25
    assert part["group"].sum() == part["y"].size and part["users"].size == part["group"].size
    cfg.ranker.splits = 3  # other held-out edges per split: more lists
    assert training_data(g, cfg, log=lambda s: None)["group"].size > part["group"].size


def test_save_load_and_feature_mismatch(tmp_path):
    from pymk.features.store import InProcessFeatureStore, user_feature_table

    g = _graph()
    cfg = _config()
    booster, summary = train_ranker(training_data(g, cfg, log=lambda s: None), cfg, log=lambda s: None)
    assert summary["objective"] in ("lambdarank", "binary") and set(summary["importance"]) == set(PAIR_FEATURES)
    assert sum(summary["importance"].values()) == pytest.approx(1.0, abs=1e-3)  # gain shares
    store = InProcessFeatureStore(user_feature_table(g), 0)
    LearnedRanker(booster, g, store).save(tmp_path / "r", {"summary": summary})
    loaded = LearnedRanker.load(tmp_path / "r", g, store)
    from pymk.candidates.stage1 import Stage1

    batch = Stage1(g, cfg.candidates).generate(np.arange(0, 600, 50))
    np.testing.assert_allclose(loaded.score(batch), LearnedRanker(booster, g, store).score(batch))
    meta = json.loads((tmp_path / "r" / "ranker.json").read_text())
    meta["features"] = meta["features"][:-1]
    (tmp_path / "r" / "ranker.json").write_text(json.dumps(meta))
    with pytest.raises(RankerError, match="trained on features"):
        LearnedRanker.load(tmp_path / "r", g, store)


def test_model_with_learned_ranker_recommends_and_survives_new_users(tmp_path):
    from pymk.features.store import InProcessFeatureStore
    from pymk.graph.edges import EdgeList
    from pymk.pipeline.build import build_from_edges
    from pymk.pipeline.model import Model

    g = _graph()
    lo, hi = g.edge_pairs()
    cfg = _config()
    path = build_from_edges(EdgeList(np.asarray(g.ids), lo, hi), tmp_path / "m", cfg, log=lambda s: None)
    assert (path / "ranker" / "model.txt").exists() and (path / "features" / "users.npy").exists()
    m = Model.load(path)
    r = m.recommend(np.arange(0, 600, 30), 10)
    assert (r.count == 10).all() and m.ranker.degraded == 0
    friends = nx_graph(g)
    for b, u in enumerate(r.users.tolist()):
        assert not set(r.cand[b].tolist()) & (set(friends[u]) | {u})
    # a feature table that predates the last 50 users: they (and lists that hold them) degrade, not fail
    table = np.load(path / "features" / "users.npy")
    m2 = Model(path, m.meta, m.config, m.graph, feature_store=InProcessFeatureStore(table[:550], 0))
    r2 = m2.recommend([580, 3], 10)
    assert (r2.count == 10).all() and m2.ranker.degraded >= 1 and m2.ranker.last_degraded[0]


def test_auto_serves_the_ranker_that_validates_best(tmp_path):
    from pymk.graph.edges import EdgeList
    from pymk.pipeline.build import build_from_edges
    from pymk.pipeline.model import Model

    g = _graph()
    lo, hi = g.edge_pairs()
    cfg = _config()
    cfg.ranker.kind = "auto"
    path = build_from_edges(EdgeList(np.asarray(g.ids), lo, hi), tmp_path / "m", cfg, log=lambda s: None)
    m = Model.load(path)
    summary = m.meta["stages"]["ranker"]
    val = summary["validation_recall@20"]
    best = max(("adamic_adar", "resource_allocation", "common_neighbors", summary["objective"]), key=val.get)
    assert summary["chosen"] == ("lightgbm" if best == summary["objective"] else best) == m.ranker_kind
    assert m.recommend([1, 2], 5).count.tolist() == [5, 5]


def test_one_gnn_serves_and_trains_the_ranker_without_seeing_its_labels(tmp_path, monkeypatch):
    """With GNN embeddings the build trains one GNN, on the ranker's internal G': the ranker's rows
    embed G' with those weights (never saw the held-out labels) and serving embeds G with the same ones."""
    import pymk.gnn.stage as stage
    from pymk.graph.edges import EdgeList
    from pymk.pipeline.build import build_from_edges
    from pymk.pipeline.model import Model
    from pymk.ranking.learned import internal_graph

    g = _graph()
    lo, hi = g.edge_pairs()
    cfg = _config()
    cfg.gnn.enabled, cfg.gnn.epochs, cfg.gnn.dim, cfg.gnn.val_k = True, 1, 16, 20
    trained_on, embedded = [], []
    real_train, real_embed = stage.train_embeddings, stage.embed
    monkeypatch.setattr(stage, "train_embeddings", lambda graph, *a, **k: trained_on.append(graph.num_edges)
                        or real_train(graph, *a, **k))
    monkeypatch.setattr(stage, "embed", lambda path, graph: embedded.append(graph.num_edges)
                        or real_embed(path, graph))
    path = build_from_edges(EdgeList(np.asarray(g.ids), lo, hi), tmp_path / "m", cfg, log=lambda s: None)
    sub, ha, _ = internal_graph(g, cfg, 0)
    assert trained_on == [g.num_edges - ha.size] == [sub.num_edges]  # one GNN, trained without the labels
    assert embedded == [sub.num_edges]  # the ranker's rows: the same weights over G'
    m = Model.load(path)
    assert m.meta["stages"]["gnn"]["train_edges"] == sub.num_edges
    served = np.load(path / "gnn" / "embeddings.npy")
    np.testing.assert_allclose(served, real_embed(path / "gnn", m.snapshot), rtol=1e-5, atol=1e-6)
    assert not np.allclose(served, real_embed(path / "gnn", sub), atol=1e-3)  # G's messages, not G''s
    assert (m.recommend(np.arange(0, 600, 60), 5).count == 5).all()


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 300), st.integers(1, 6), st.floats(0, 1), st.integers(0, 2**31), st.integers(1, 64))
def test_latest_friendships_match_a_full_lexsort(m, distinct, share, seed, chunk):
    """The held-out share of a time split: the same friendships a full (ts, random key) sort picks, ties at
    the cut broken by the same draws, whatever the chunking of those draws."""
    from pymk.ranking.learned import _latest

    ts = np.random.default_rng(seed).integers(0, distinct, m)  # few distinct times: many ties
    n_out = int(share * m)
    expect = np.sort(np.lexsort((np.random.default_rng(seed + 1).random(m), ts))[m - n_out:])
    got = _latest(ts, n_out, np.random.default_rng(seed + 1), chunk=chunk)
    assert np.array_equal(got, expect)
