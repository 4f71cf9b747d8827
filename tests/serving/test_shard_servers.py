"""Shard servers as Ray actors on a real 3-node local Ray cluster (`ray.cluster_utils.Cluster`): each holds
only its shard, answers equal the in-process servers' after live events, and a server killed mid-use
leaves requests answering (flagged with the shard) until Ray restarts it and the router replays what it
had applied."""

import time

import numpy as np
import pytest

from pymk.candidates.fof import friends_of_friends
from pymk.graph.shard_graph import held_users
from pymk.graph.sharded import load_plan
from pymk.pipeline.model import Model
from pymk.stream.log import EdgeEvent
from tests.helpers import build_synth_model

ray = pytest.importorskip("ray")

from tests.ray_cluster import local_cluster  # noqa: E402

USERS, SHARDS = 400, 3
FIELDS = ("cand", "cn", "aa", "ra", "count")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_synth_model(tmp_path_factory.mktemp("sharded") / "m", users=USERS, degree=10, seed=5, shards=SHARDS,
                             method="hash")


@pytest.fixture(scope="module")
def cluster():
    with local_cluster() as (c, _):
        yield c


def _events(rng, n_users, count, t0):
    """Random adds (some to new ids), removals and one erasure, as log events."""
    out = []
    for i in range(count):
        a, b = (int(x) for x in rng.integers(0, n_users, 2))
        r = rng.random()
        if r < 0.15:
            b = 10_000 + int(rng.integers(0, 20))  # a new user (or one that joined earlier in the sequence)
        op = "remove" if 0.15 <= r < 0.35 else "add"
        out.append(EdgeEvent(a, b, t0 + i, op))
    out.append(EdgeEvent(int(rng.integers(0, n_users)), 0, t0 + count, "erase"))
    return out


def _same(m_ref, m, users):
    a = friends_of_friends(m_ref.sharded, users, 50)
    b = friends_of_friends(m.sharded, users, 50)
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


def test_ray_shard_servers_hold_their_shard_and_follow_events(model_dir, cluster):
    from pymk.serving.shard_router import ray_servers

    plan = load_plan(model_dir / "graph")
    router = ray_servers(model_dir, plan, timeout_s=5.0)
    m_ref, m = Model.load(model_dir), Model.load(model_dir, servers=router)
    stats = router.server_stats()
    assert len({s["node"] for s in stats}) >= 2  # spread over the cluster's nodes
    for s, st in enumerate(stats):  # each maps its own shard: its held users' entries, nothing else
        assert st["entries"] == st["snapshot_entries"] == int(m_ref.snapshot.degree[held_users(plan, s)].sum())
    users = np.arange(USERS)
    assert _same(m_ref, m, users)

    rng = np.random.default_rng(0)
    ev = _events(rng, USERS, 300, 1.0)
    m_ref.apply(ev)
    m.apply(ev)
    everyone = np.arange(m_ref.graph.num_users)
    assert m.graph.num_users == m_ref.graph.num_users > USERS  # new users joined, homed on a shard each
    assert _same(m_ref, m, everyone)

    # a shard server dies: requests keep answering (the shard named), changes meanwhile are not lost
    victim = 1
    ray.kill(router.servers[victim], no_restart=False)
    ev2 = _events(rng, USERS, 200, 1000.0)
    m_ref.apply(ev2)
    m.apply(ev2)
    friends_of_friends(m.sharded, everyone, 50)  # answers, with or without the dead shard's lists
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # Ray restarts the actor from the model directory
        try:
            ray.get(router.servers[victim].ping.remote(), timeout=5)
            break
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
            continue
    assert _same(m_ref, m, np.arange(m_ref.graph.num_users))  # replayed before it answered again
    assert router.replays[victim] >= 1
    assert router.failures[victim] >= 1 or router.replays[victim] >= 1


def test_service_on_ray_shard_servers_answers_like_the_local_one_and_survives_a_dead_shard(model_dir, cluster):
    """`pymk serve --executor ray` (the Service it builds: a ranking tier that maps no adjacency) against the
    same tier over in-process shard servers: the same answers over HTTP after new users, friendships,
    unfriending and an erasure posted to it; then a shard server that dies for good leaves every request
    answering 200, flagged `degraded` with the shard."""
    from fastapi.testclient import TestClient

    from pymk.serving.app import create_app
    from pymk.serving.service import Service
    from pymk.serving.settings import ServeSettings

    log = model_dir.parent / "events.log"
    common = {"model": str(model_dir), "stream_block_ms": 20, "cache_size": 0, "stream_log": str(log)}
    on_ray = Service.from_settings(ServeSettings(executor="ray", shard_timeout_ms=5000, **common))
    local = Service.from_settings(ServeSettings(tier=True, **common))
    try:
        assert on_ray.model.tier and local.model.tier
        cr, cl = TestClient(create_app(on_ray)), TestClient(create_app(local))
        rng = np.random.default_rng(7)
        for _ in range(40):
            a, b = (int(x) for x in rng.integers(0, USERS, 2))
            assert cr.post("/v1/edges", json={"src": a, "dst": b}).status_code == 200
        for new in (50_000, 50_001):
            for _ in range(3):
                cr.post("/v1/edges", json={"src": new, "dst": int(rng.integers(0, USERS))})
        friend = int(on_ray.model.graph.neighbors(3)[0])
        assert cr.delete(f"/v1/users/3/friends/{friend}").status_code == 200
        assert cr.delete("/v1/users/11").status_code == 200
        pos = local.log_event("add", 0, 0)  # a self-loop marks the log's end; applying it changes nothing
        assert local.stream.wait_applied(pos, timeout=30)
        users = [u for u in range(USERS) if u != 11] + [50_000, 50_001]
        for u in users:
            r, want = cr.get(f"/v1/users/{u}/recommendations"), cl.get(f"/v1/users/{u}/recommendations")
            assert r.status_code == want.status_code == 200, (u, r.text)
            got = [(x["user_id"], x["mutual_friends"]) for x in r.json()["recommendations"]]
            assert got == [(x["user_id"], x["mutual_friends"]) for x in want.json()["recommendations"]], u
            assert not r.json()["degraded"] and not r.json()["degraded_sources"]
        assert cr.get("/v1/users/11/recommendations").status_code == 404

        dead = 2
        ray.kill(on_ray.model.servers.servers[dead], no_restart=True)
        flagged = 0
        for u in users[:60]:
            r = cr.get(f"/v1/users/{u}/recommendations")
            assert r.status_code == 200, r.text
            flagged += f"shard {dead}" in r.json()["degraded_sources"] and r.json()["degraded"]
        assert flagged > 0
    finally:
        on_ray.close()
        local.close()


def test_a_paused_shard_server_costs_one_deadline_then_rejoins(model_dir, cluster):
    """A shard server whose process stops answering (SIGSTOP) is left out after its deadline: requests answer
    200, flagged with the shard, in bounded time; changes posted meanwhile are applied once it resumes
    (SIGCONT), and answers equal the in-process servers' again."""
    import os
    import signal

    from pymk.serving.shard_router import ray_servers

    plan = load_plan(model_dir / "graph")
    router = ray_servers(model_dir, plan, timeout_s=0.5)
    m_ref, m = Model.load(model_dir), Model.load(model_dir, servers=router)
    slow = 0
    pid = router.server_stats()[slow]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        users = np.flatnonzero(plan.home != slow)[:30]  # homed elsewhere: their lists still come back
        friends_of_friends(m.sharded, users, 50)
        assert router.take_degraded() == [f"shard {slow}"]
        ev = _events(np.random.default_rng(3), USERS, 100, 5000.0)
        m_ref.apply(ev)
        m.apply(ev)  # shard 0's batch waits in its queue (and in the router's history)
    finally:
        os.kill(pid, signal.SIGCONT)
    everyone = np.arange(m_ref.graph.num_users)
    assert _same(m_ref, m, everyone)
    assert router.take_degraded() == [] and router.replays[slow] == 0  # same process: nothing to replay
