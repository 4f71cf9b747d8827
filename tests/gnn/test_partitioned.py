"""Partition-and-train (`gnn.strategy = "partition"`): each partition's subgraph holds exactly its users, their
halo and the friendships among them (against brute force), it trains only on friendships with an end it
owns, and the merged model learns as one model does (one embedding space)."""

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.gnn.config import GnnConfig
from pymk.gnn.partitioned import _subgraph, train_partitioned
from pymk.gnn.train import Trainer
from tests.helpers import graph_from_pairs, synth_graph


@settings(max_examples=30, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, 29), st.integers(0, 29)), max_size=80),
       owned=st.sets(st.integers(0, 29), max_size=12))
def test_a_partitions_subgraph_is_its_users_their_halo_and_the_friendships_among_them(pairs, owned):
    g = graph_from_pairs(np.array(pairs, np.int64).reshape(-1, 2), 30)
    ref = nx.Graph()
    ref.add_nodes_from(range(30))
    ref.add_edges_from((a, b) for a, b in pairs if a != b)
    owned = np.array(sorted(owned), np.int64)
    s = _subgraph(g, owned)
    halo = set().union(*(set(ref[u]) for u in owned.tolist())) - set(owned.tolist()) if owned.size else set()
    nodes = s["nodes"].tolist()
    assert nodes[: s["owned"]] == owned.tolist() and set(nodes[s["owned"]:]) == halo
    glob = lambda x, y: {(min(nodes[a], nodes[b]), max(nodes[a], nodes[b])) for a, b in zip(x, y, strict=True)}  # noqa: E731
    keep = set(nodes)
    assert glob(*s["graph"].edge_pairs()) == {(min(a, b), max(a, b)) for a, b in ref.edges() if a in keep and b in keep}
    mine = set(owned.tolist())
    assert glob(s["pos_lo"], s["pos_hi"]) == {(min(a, b), max(a, b)) for a, b in ref.edges() if a in mine or b in mine}


@pytest.fixture(scope="module")
def small_graph():
    return synth_graph(600, 10, 5)


def test_partition_and_train_learns_one_embedding_space(small_graph):
    cfg = GnnConfig(dim=32, epochs=4, patience=10, seed=1, val_k=50, strategy="partition", partitions=3)
    untrained = Trainer(small_graph, cfg).validate()  # the same start: same seed, same carve
    model, result = train_partitioned(small_graph, cfg, log=lambda s: None)
    assert len(result.history) == 4 and result.steps > 0
    # validated on the whole graph with the merged weights: every user's vector is comparable to every other's
    assert result.best_val > max(untrained + 0.05, 0.15)
    assert model.emb.weight.shape == (small_graph.num_users, 32)


def test_partition_config_is_checked():
    with pytest.raises(ValueError, match="gnn.partitions must be >= 2"):
        GnnConfig(strategy="partition", partitions=1).validate()
    with pytest.raises(ValueError, match="gnn.strategy must be"):
        GnnConfig(strategy="pipeline").validate()
