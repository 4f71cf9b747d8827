import numpy as np
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.candidates.fof import friends_of_friends
from pymk.graph.partition import partition, plan_replicas
from pymk.graph.shard_store import InProcessShardStore, RedisShardStore, ShardStoreError
from pymk.graph.sharded import ShardedGraph, load_plan, save_plan
from pymk.graph.snapshot import SnapshotError
from tests.helpers import graph_from_pairs

FIELDS = ("cand", "cn", "aa", "ra", "count")


def _same(a, b):
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


@settings(max_examples=40, deadline=None)
@given(st.integers(4, 40).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), min_size=1, max_size=160),
    st.integers(1, 6), st.sampled_from(["hash", "community"]), st.sampled_from([0.0, 0.5]),
    st.sampled_from([0, 2]), st.sampled_from(["cn", "aa", "ra"]))))
def test_sharded_traversal_equals_unsharded(case):
    n, pairs, shards, method, budget, cap, score = case
    g = graph_from_pairs(pairs, n)
    shards = min(shards, n)
    plan = plan_replicas(g, partition(g, shards, method), shards, method, budget)
    sg = ShardedGraph(plan, InProcessShardStore(g, plan), batch=7)
    users = np.arange(n)
    blocked = [[(u * 7 + 3) % n] for u in range(n)]
    assert _same(friends_of_friends(g, users, 10, score=score, max_expand=cap, blocked=blocked),
                 friends_of_friends(sg, users, 10, score=score, max_expand=cap, blocked=blocked))


def test_remote_reads_are_batched_per_shard():
    rng = np.random.default_rng(0)
    g = graph_from_pairs(rng.integers(0, 200, (1500, 2)), 200)
    plan = plan_replicas(g, partition(g, 4, "hash"), 4, "hash", 0.0)
    store = InProcessShardStore(g, plan)
    sg = ShardedGraph(plan, store, batch=1000)
    friends_of_friends(sg, np.arange(200), 20)
    # one batch per home shard: its own lists, its local friends' lists, one request per remote shard
    assert sg.remote_requests == 4 * 3 and sg.local_requests == 4 * 2
    assert store.stats.requests == sg.remote_requests + sg.local_requests


def test_store_refuses_lists_it_does_not_hold():
    g = graph_from_pairs([(0, 1), (1, 2), (2, 3)], 4)
    plan = plan_replicas(g, np.array([0, 0, 1, 1], np.int32), 2, "hash", 0.0)
    with pytest.raises(ShardStoreError, match="does not hold"):
        InProcessShardStore(g, plan).lists(0, np.array([3]))


def test_plan_roundtrip_and_shard_count_check(tmp_path):
    g = graph_from_pairs([(0, 1), (1, 2), (2, 3)], 4)
    plan = plan_replicas(g, partition(g, 2, "community"), 2, "community", 0.25)
    save_plan(tmp_path, plan, budget=0.25)
    back = load_plan(tmp_path, expect_shards=2)
    assert np.array_equal(back.home, plan.home) and np.array_equal(back.rep_idx, plan.rep_idx)
    with pytest.raises(SnapshotError, match="built with 2 shards; it cannot be loaded with 4"):
        load_plan(tmp_path, expect_shards=4)
    with pytest.raises(SnapshotError, match="built unsharded"):
        load_plan(tmp_path / "nowhere", expect_shards=3)


def test_redis_store_matches_in_process(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    rng = np.random.default_rng(1)
    g = graph_from_pairs(rng.integers(0, 300, (2000, 2)), 300)
    plan = plan_replicas(g, partition(g, 4, "community"), 4, "community", 0.25)
    store = RedisShardStore(client, prefix="t-redis-store")
    with pytest.raises(ShardStoreError, match="empty"):
        store.lists(0, np.array([0]))
    written = store.publish(g, plan)
    assert written == 300 + plan.rep_idx.size
    assert store.publish(g, plan) == written  # idempotent
    # every key of a shard carries the shard's hash tag, so a Redis Cluster keeps it on one node
    keys = [k.decode() for k in client.scan_iter("t-redis-store:*:adj:*")]
    assert len(keys) == written and all("{s" in k for k in keys)
    sg = ShardedGraph(plan, store, batch=64)
    users = np.arange(300)
    assert _same(friends_of_friends(g, users, 15), friends_of_friends(sg, users, 15))
    # one MGET round trip per shard asked
    assert store.stats.requests == sg.remote_requests + sg.local_requests
    other = plan_replicas(g, partition(g, 8, "hash"), 8, "hash", 0.0)
    with pytest.raises(ShardStoreError, match="publish it again"):
        RedisShardStore(client, prefix="t-redis-store", plan=other)
