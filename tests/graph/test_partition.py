import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.graph.locality import locality_report
from pymk.graph.partition import (
    PartitionError,
    check_request,
    hash_partition,
    partition,
    plan_replicas,
    stable_hash,
)
from tests import helpers
from tests.helpers import graph_from_pairs


@pytest.fixture(scope="module")
def synth_graph():
    return helpers.synth_graph(4000, 12, 2)


def test_stable_hash_is_fixed():
    # fixed values: a hash that changed between versions would move every user to another shard
    assert stable_hash(np.array([0, 1, -1, 2**62])).tolist() == [
        16294208416658607535, 10451216379200822465, 16490336266968443936, 47939714376772075]
    g = graph_from_pairs([(0, 1), (1, 2)], 3)
    assert hash_partition(g, 4).tolist() == (stable_hash(g.ids) % np.uint64(4)).astype(int).tolist()


@pytest.mark.parametrize(("n", "shards", "method", "msg"), [
    (10, 0, "hash", "must be >= 1"), (10, 11, "hash", "more than the 10 users"),
    (10, 2, "metis", "unknown partition method"),
])
def test_bad_requests(n, shards, method, msg):
    with pytest.raises(PartitionError, match=msg):
        check_request(n, shards, method)


@pytest.mark.parametrize("shards", [2, 8, 16])
def test_community_partition_is_balanced_and_beats_hash(synth_graph, shards):
    home = partition(synth_graph, shards, "community")
    assert home.min() >= 0 and home.max() < shards
    deg = synth_graph.degree
    load = np.bincount(home, weights=deg, minlength=shards)
    assert load.max() <= 1.10 * load.mean() + deg.max()
    comm = locality_report(synth_graph, plan_replicas(synth_graph, home, shards, "community", 0.0))
    hashed = locality_report(synth_graph, plan_replicas(synth_graph, hash_partition(synth_graph, shards), shards,
                                                        "hash", 0.0))
    assert comm.two_hop_locality > min(2 * hashed.two_hop_locality, hashed.two_hop_locality + 0.25)
    assert hashed.two_hop_locality == pytest.approx(1 / shards, abs=0.08)


def test_replicas_respect_budget_and_raise_locality(synth_graph):
    home = partition(synth_graph, 8, "community")
    base = locality_report(synth_graph, plan_replicas(synth_graph, home, 8, "community", 0.0))
    plan = plan_replicas(synth_graph, home, 8, "community", 0.25)
    rep = locality_report(synth_graph, plan)
    assert rep.replication_overhead <= 1.25 + 1e-9
    assert rep.two_hop_locality > base.two_hop_locality
    for s in range(8):
        r = plan.replicas(s)
        assert np.all(np.diff(r) > 0) and not np.any(plan.home[r] == s)  # sorted, never its own users


def _brute_locality(graph, plan):
    """Literal definition: every path A -> B -> C, local if B is homed or replicated on home(A)."""
    local = total = 0
    edges_local = 0
    requests = []
    for a in range(graph.num_users):
        s = plan.home[a]
        reps = set(plan.replicas(s).tolist())
        remote_shards = set()
        for b in graph.neighbors(a).tolist():
            paths = len(graph.neighbors(b))
            total += paths
            if plan.home[b] == s or b in reps:
                local += paths
            else:
                remote_shards.add(int(plan.home[b]))
            edges_local += plan.home[b] == s
        requests.append(len(remote_shards))
    return local / max(total, 1), edges_local / max(1, 2 * graph.num_edges), float(np.mean(requests))


@settings(max_examples=25, deadline=None)
@given(st.integers(6, 40).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), min_size=5, max_size=150),
    st.integers(2, 5), st.sampled_from(["hash", "community"]), st.sampled_from([0.0, 0.25, 1.0]))))
def test_locality_report_matches_literal_definition(case):
    n, pairs, shards, method, budget = case
    g = graph_from_pairs(pairs, n)
    plan = plan_replicas(g, partition(g, shards, method), shards, method, budget)
    rep = locality_report(g, plan)
    loc, edge_loc, req = _brute_locality(g, plan)
    assert rep.two_hop_locality == pytest.approx(loc)
    assert rep.edge_locality == pytest.approx(edge_loc)
    assert rep.cross_shard_requests_mean == pytest.approx(req)
