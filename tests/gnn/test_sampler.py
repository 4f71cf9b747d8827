import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.gnn.sampler import NeighborSampler
from tests.helpers import graph_from_pairs

graphs = st.integers(5, 60).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), min_size=1, max_size=300)))


@settings(max_examples=50, deadline=None)
@given(graphs, st.lists(st.integers(1, 6), min_size=1, max_size=3), st.integers(0, 10**6), st.data())
def test_sampled_subgraph_is_valid(case, fanouts, seed, data):
    n, pairs = case
    g = graph_from_pairs(pairs, n)
    sampler = NeighborSampler(g, fanouts)
    seeds = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=8))
    excl_pairs = [p for p in pairs[:3] if p[0] != p[1]]
    excl = (np.array([a for a, _ in excl_pairs], np.int64), np.array([b for _, b in excl_pairs], np.int64))
    out = sampler.sample(seeds, seed=seed, exclude=excl)
    uniq_seeds = list(dict.fromkeys(seeds))
    assert out.node[: len(uniq_seeds)].tolist() == uniq_seeds
    assert len(set(out.node.tolist())) == out.node.size  # de-duplicated
    assert out.node.size <= sampler.max_nodes(len(uniq_seeds))
    assert sum(out.num_sampled_nodes) == out.node.size and sum(out.num_sampled_edges) == out.row.size
    banned = {(a, b) for a, b in excl_pairs} | {(b, a) for a, b in excl_pairs}
    per_target = {}
    for r, c in zip(out.row.tolist(), out.col.tolist(), strict=True):
        y, x = int(out.node[r]), int(out.node[c])
        assert y in set(g.neighbors(x).tolist())  # a real edge, message neighbour -> node
        assert (x, y) not in banned  # label edges never leak into message passing
        per_target.setdefault(x, []).append(y)
    hop_sizes = np.cumsum([0] + out.num_sampled_nodes)
    for h, k in enumerate(fanouts):  # every node expanded at hop h got min(k, allowed degree) neighbours
        for x in out.node[hop_sizes[h]:hop_sizes[h + 1]].tolist():
            allowed = [y for y in g.neighbors(x).tolist() if (x, y) not in banned]
            got = per_target.get(x, [])
            assert len(got) == len(set(got)) == min(k, len(allowed))


def test_deterministic_and_roughly_uniform():
    star = graph_from_pairs([(0, i) for i in range(1, 21)], 21)
    sampler = NeighborSampler(star, [5])
    a = sampler.sample([0], seed=7)
    assert np.array_equal(a.node, sampler.sample([0], seed=7).node)
    counts = np.zeros(21)
    for s in range(4000):
        counts[sampler.sample([0], seed=s).node[1:]] += 1
    expected = 4000 * 5 / 20
    assert counts[0] == 0 and np.all(np.abs(counts[1:] - expected) < 0.15 * expected)


def test_batch_bound_of_the_brief():
    rng = np.random.default_rng(0)
    g = graph_from_pairs(rng.integers(0, 5000, (60000, 2)), 5000)
    sampler = NeighborSampler(g, [10, 10])
    out = sampler.sample(rng.choice(5000, 256, replace=False), seed=1)
    assert sampler.max_nodes(256) == 28416 and out.node.size <= 28416
    with pytest.raises(ValueError):
        NeighborSampler(g, [])


def test_node_sample_independent_of_batch_company():
    rng = np.random.default_rng(4)
    g = graph_from_pairs(rng.integers(0, 400, (6000, 2)), 400)
    sampler = NeighborSampler(g, [4, 4])

    def first_hop(out, x):
        loc = {int(v): i for i, v in enumerate(out.node)}
        e = out.num_sampled_edges[0]
        return sorted(int(out.node[r]) for r, c in zip(out.row[:e], out.col[:e], strict=True) if c == loc[x])

    alone = sampler.sample([7], seed=3)
    together = sampler.sample([5, 9, 7, 11], seed=3)
    assert first_hop(alone, 7) == first_hop(together, 7)
