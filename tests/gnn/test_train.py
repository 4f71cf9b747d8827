import numpy as np
import pytest
import torch

from pymk.gnn.config import CheckpointError, GnnConfig
from pymk.gnn.model import LinkEncoder, structural_features
from pymk.gnn.sampler import NeighborSampler
from pymk.gnn.train import Trainer, carve_validation, infer, load_checkpoint, save_checkpoint
from pymk.graph.snapshot import CSRGraph
from tests.helpers import graph_from_pairs, synth_graph


@pytest.fixture(scope="module")
def small_graph():
    return synth_graph(600, 10, 5)


@pytest.mark.parametrize("kind", ["sage", "gcn", "gat"])
def test_layerwise_inference_equals_forward_on_full_neighbourhoods(kind):
    rng = np.random.default_rng(0)
    g = graph_from_pairs(rng.integers(0, 60, (300, 2)), 60)
    cfg = GnnConfig(kind=kind, dim=16, fanouts=(100, 100))
    model = LinkEncoder(60, cfg).eval()
    struct = torch.from_numpy(structural_features(g.degree))
    full = infer(model, g, struct, chunk=7)
    out = NeighborSampler(g, cfg.fanouts).sample([3, 11, 42])  # fan-out > max degree: nothing dropped
    nodes = torch.from_numpy(out.node)
    with torch.no_grad():
        h = model(nodes, struct[nodes], out.edge_index())
    np.testing.assert_allclose(h[:3].numpy(), full[[3, 11, 42]], rtol=1e-4, atol=1e-5)


def test_training_learns_and_beats_random(small_graph):
    cfg = GnnConfig(dim=32, epochs=4, patience=10, seed=1, val_k=50)
    trainer = Trainer(small_graph, cfg)
    untrained = trainer.validate()
    result = trainer.fit(progress=False, log=lambda s: None)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.best_val > max(untrained + 0.05, 0.15)
    assert result.max_batch_nodes <= NeighborSampler(small_graph, cfg.fanouts).max_nodes(cfg.batch)
    assert result.sample_seconds > 0 and result.step_seconds > 0  # both phases timed (no race between them)


def test_validation_edges_are_the_latest_and_absent(small_graph):
    mp, lo, hi = carve_validation(small_graph, 0.1, 0)
    assert mp.num_edges + lo.size == small_graph.num_edges
    for a, b in zip(lo[:50], hi[:50], strict=True):
        assert b not in set(mp.neighbors(a).tolist())
    # by time: every validation edge is at least as late as every kept edge
    ts_all = {(min(a, b), max(a, b)): t for a in range(small_graph.num_users)
              for b, t in zip(small_graph.neighbors(a).tolist(),
                              small_graph.ts[small_graph.indptr[a]:small_graph.indptr[a + 1]].tolist(), strict=True)}
    val_ts = [ts_all[(int(a), int(b))] for a, b in zip(lo, hi, strict=True)]
    kept_lo, kept_hi = mp.edge_pairs()
    kept_ts = [ts_all[(int(a), int(b))] for a, b in zip(kept_lo, kept_hi, strict=True)]
    assert min(val_ts) >= max(kept_ts)


def test_checkpoint_roundtrip_and_mismatch(small_graph, tmp_path):
    cfg = GnnConfig(dim=16, kind="gat")
    model = LinkEncoder(small_graph.num_users, cfg)
    save_checkpoint(tmp_path, model, small_graph, None)
    back = load_checkpoint(tmp_path, small_graph)
    assert back.config == cfg
    for a, b in zip(model.state_dict().values(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = graph_from_pairs([(0, 1)], 2)
    with pytest.raises(CheckpointError, match=f"trained on {small_graph.num_users} users, the graph has 2"):
        load_checkpoint(tmp_path, other)
    with pytest.raises(CheckpointError, match="no GNN checkpoint"):
        load_checkpoint(tmp_path / "none", small_graph)


def test_bad_config():
    with pytest.raises(ValueError, match="layers"):
        GnnConfig(layers=3).validate()
    with pytest.raises(ValueError, match="kind"):
        GnnConfig(kind="gin").validate()


def test_isolated_users_get_embeddings():
    from pymk.graph.edges import EdgeList

    # users 5 and 6 have no friends at all (e.g. every edge of theirs was held out)
    g = CSRGraph.from_edges(EdgeList(np.arange(7, dtype=np.int64), np.array([0, 1, 2], np.int32),
                                     np.array([1, 2, 3], np.int32)))
    model = LinkEncoder(7, GnnConfig(dim=8))
    emb = infer(model, g, torch.from_numpy(structural_features(g.degree)))
    assert emb.shape == (7, 8) and np.isfinite(emb).all() and np.abs(emb[5]).sum() > 0


def test_fine_tune_refuses_another_architecture(small_graph, tmp_path):
    from pymk.gnn.stage import train_embeddings

    save_checkpoint(tmp_path, LinkEncoder(small_graph.num_users, GnnConfig(dim=16)), small_graph, None)
    with pytest.raises(CheckpointError, match="dim: checkpoint 16 vs config 32"):
        train_embeddings(small_graph, GnnConfig(dim=32), from_checkpoint=tmp_path, progress=False)


def test_trimmed_forward_equals_full_forward_for_seeds():
    rng = np.random.default_rng(1)
    g = graph_from_pairs(rng.integers(0, 80, (500, 2)), 80)
    for skip in (False, True):
        model = LinkEncoder(80, GnnConfig(dim=16, skip=skip)).eval()
        out = NeighborSampler(g, [3, 3]).sample([1, 2, 3, 50], seed=5)
        nodes = torch.from_numpy(out.node)
        struct = torch.from_numpy(structural_features(g.degree))[nodes]
        with torch.no_grad():
            full = model(nodes, struct, out.edge_index())
            trim = model(nodes, struct, out.edge_index(), out.num_sampled_nodes, out.num_sampled_edges)
        assert trim.shape[0] == out.num_sampled_nodes[0]
        np.testing.assert_allclose(trim.numpy(), full[: trim.shape[0]].numpy(), rtol=1e-5, atol=1e-6)


def test_feature_file_columns_become_inputs(small_graph, tmp_path):
    from pymk.gnn.model import input_features

    ids = small_graph.ids[:5]
    (tmp_path / "f.csv").write_text("user_id,age,score\n" + "".join(f"{u},{20 + i},{i * 0.5}\n" for i, u in
                                                                    enumerate(ids.tolist())) + "999999999,1,1\n")
    cfg = GnnConfig(dim=16, features=str(tmp_path / "f.csv"), epochs=1, val_k=20)
    x = input_features(small_graph, cfg)
    assert x.shape == (small_graph.num_users, 1 + 2 + 1)
    assert x[:5, 3].tolist() == [1.0] * 5 and x[5:, 3].sum() == 0  # "has features" column
    assert np.isclose(x[:5, 1].mean(), 0, atol=1e-6) and x[0, 1] < x[4, 1]
    trainer = Trainer(small_graph, cfg)
    trainer.fit(progress=False, log=lambda s: None)
    save_checkpoint(tmp_path / "ck", trainer.model, small_graph, None)
    assert load_checkpoint(tmp_path / "ck", small_graph).struct.in_features == 4
    (tmp_path / "bad.csv").write_text("user_id,city\n1,paris\n")
    with pytest.raises(ValueError, match="'city' is string, not numeric"):
        input_features(small_graph, GnnConfig(features=str(tmp_path / "bad.csv")))


def test_community_feature_trains_and_roundtrips(small_graph, tmp_path):
    cfg = GnnConfig(dim=16, communities=4, epochs=1, val_k=20)
    trainer = Trainer(small_graph, cfg)
    labels = trainer.model.community.numpy()
    assert labels.min() == 0 and labels.max() == 3  # METIS parts of the message-passing graph
    trainer.fit(progress=False, log=lambda s: None)
    save_checkpoint(tmp_path, trainer.model, small_graph, None)
    back = load_checkpoint(tmp_path, small_graph)
    assert np.array_equal(back.community.numpy(), labels)
    struct = torch.from_numpy(structural_features(small_graph.degree))
    np.testing.assert_allclose(infer(back, small_graph, struct), infer(trainer.model, small_graph, struct), rtol=1e-6)


def test_hard_negatives_are_two_hop_non_friends(small_graph):
    from pymk.candidates.fof import within_two_hops
    from pymk.gnn.train import hard_negatives

    rng = np.random.default_rng(0)
    src = rng.choice(np.flatnonzero(small_graph.degree > 1), 500)
    neg = hard_negatives(small_graph, src, rng)
    friends = np.array([n in set(small_graph.neighbors(s).tolist()) for s, n in zip(src, neg, strict=True)])
    two_hop = within_two_hops(small_graph, src, neg)
    # most walks succeed: 2-hop non-friends; a failed walk falls back to a uniform user
    assert two_hop.mean() > 0.6
    assert friends.mean() < 0.05
