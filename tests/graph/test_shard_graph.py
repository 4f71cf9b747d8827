"""Per-shard living graphs: each shard server's lists follow add / remove / erase / new-user events exactly
(against networkx), a sharded model's friends-of-friends equals the unsharded live graph's after any
event sequence, before and after compaction, and shard files hold only their shard."""

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.candidates.fof import friends_of_friends
from pymk.config import PymkConfig
from pymk.graph.partition import partition, plan_replicas
from pymk.graph.shard_graph import ShardGraph, ShardGraphError, held_users, save_shards
from pymk.pipeline.model import Model
from pymk.stream.log import EdgeEvent
from tests.helpers import graph_from_pairs

N0 = 30
FIELDS = ("cand", "cn", "aa", "ra", "count")

events = st.lists(st.tuples(st.sampled_from(["add", "add", "add", "remove", "erase", "new"]),
                            st.integers(0, N0 + 8), st.integers(0, N0 + 8)), max_size=50)


def _model(pairs, shards, method, budget):
    g = graph_from_pairs(pairs, N0)
    plan = plan_replicas(g, partition(g, shards, method), shards, method, budget)
    config = PymkConfig.from_dict({"candidates": {"ppr": {"enabled": False}}, "ranker": {"kind": "adamic_adar"}})
    from pymk.graph.live import LiveGraph

    return Model(None, {"config": config.to_dict()}, config, LiveGraph(g), plan)


def _to_events(model, evs):
    """The sequence as log events over external ids (build users: id == dense index; new: 1000 + k)."""
    out, n, t = [], N0, 1.0
    for kind, a, b in evs:
        t += 1
        if kind == "new":  # a friendship to an id never seen: a new user
            out.append(EdgeEvent(1000 + n, a % n, t))
            n += 1
            continue
        ida, idb = a % n, b % n
        ida = ida if ida < N0 else 1000 + ida
        idb = idb if idb < N0 else 1000 + idb
        if kind == "erase":
            out.append(EdgeEvent(ida, ida, t, "erase"))
        else:
            out.append(EdgeEvent(ida, idb, t, kind))
    return out


def _check(model):
    live = model.graph
    n = live.num_users
    ref = nx.Graph()
    ref.add_nodes_from(range(n))
    for u in range(n):
        ref.add_edges_from((u, int(v)) for v in live.neighbors(u))
    router = model.servers
    for s, server in enumerate(router.servers):
        held = server.graph.held
        assert set(held.tolist()) == set(held_users(router.plan, s).tolist()) | \
            {u for u in range(N0, n) if router.plan.home[u] == s}
        ptr, idx = server.lists(np.sort(held))[1:]
        for i, u in enumerate(np.sort(held).tolist()):
            assert idx[ptr[i]:ptr[i + 1]].tolist() == sorted(ref[u]), (s, u)
    users = np.arange(n)
    want = friends_of_friends(live, users, n, score="aa")
    got = friends_of_friends(model.sharded, users, n, score="aa")
    assert all(np.array_equal(getattr(want, f), getattr(got, f)) for f in FIELDS)


@settings(max_examples=30, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, N0 - 1), st.integers(0, N0 - 1)), max_size=80), evs=events,
       shards=st.integers(2, 4), method=st.sampled_from(["hash", "community"]), budget=st.sampled_from([0.0, 0.5]),
       split=st.integers(0, 50))
def test_sharded_model_follows_events_like_the_unsharded_graph(pairs, evs, shards, method, budget, split):
    m = _model(pairs, shards, method, budget)
    ev = _to_events(m, evs)
    m.apply(ev[:split])
    for server in m.servers.servers:  # compaction between batches changes nothing
        server.graph.compact()
    m.apply(ev[split:])
    _check(m)


def test_shard_files_hold_only_their_shard(tmp_path):
    rng = np.random.default_rng(1)
    g = graph_from_pairs(rng.integers(0, 400, (3000, 2)), 400)
    plan = plan_replicas(g, partition(g, 4, "hash"), 4, "hash", 0.1)
    entries = save_shards(g, plan, tmp_path)
    assert sum(entries) == int(g.indices.size) + sum(int(g.degree[plan.replicas(s)].sum()) for s in range(4))
    for s in range(4):
        sg = ShardGraph.load(tmp_path, s, plan_users=400)
        held = held_users(plan, s)
        assert np.array_equal(sg.held, held)
        assert sg.entries == int(g.degree[held].sum())
        with pytest.raises(ShardGraphError, match="does not hold"):
            sg.lists(np.setdiff1d(np.arange(400), held)[:1])
    with pytest.raises(ShardGraphError, match="the plan has 500"):
        ShardGraph.load(tmp_path, 0, plan_users=500)


def test_an_overlay_reads_changed_lists_from_the_servers_and_the_rest_from_the_build():
    """`DeltaOverlay` (Redis-published lists in front of the shard servers), with a frozen in-process store
    standing for Redis: after events, any mix of changed and unchanged users, in any order, gets the servers'
    current lists."""
    from pymk.graph.shard_store import InProcessShardStore
    from pymk.serving.shard_router import DeltaOverlay

    rng = np.random.default_rng(5)
    pairs = rng.integers(0, N0, (90, 2)).tolist()
    m = _model(pairs, 3, "hash", 0.5)
    overlay = DeltaOverlay(InProcessShardStore(m.snapshot, m.plan), m.servers)
    m.apply(_to_events(m, [("add", 1, 2), ("remove", *pairs[0]), ("add", 4, 9), ("erase", 6, 6)]))
    changed = m.servers.changed(np.arange(N0))
    assert 0 < changed.sum() < N0
    for s in range(3):
        held = held_users(m.plan, s)
        users = rng.permutation(held)
        got, want = overlay.lists(s, users), m.servers.lists(s, users)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
