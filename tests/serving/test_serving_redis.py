"""The service against real Redis servers: the L2 cache, shared user actions, the published feature store,
and degraded mode (Redis killed mid-run, then restarted)."""

import time

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from pymk.features.store import InProcessFeatureStore, RedisFeatureStore
from pymk.pipeline.model import Model, feature_prefix
from pymk.serving.app import create_app
from pymk.serving.cache import RedisCache
from pymk.serving.redis_link import RedisDown, RedisLink
from pymk.serving.service import Service
from pymk.serving.settings import ServeSettings
from tests.helpers import build_learned_model
from tests.redis_server import RedisServer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A 600-user model with a learned ranker (so there are features to publish), ids 1000..1599."""
    return build_learned_model(tmp_path_factory.mktemp("m") / "m", id_offset=1000)


def publish_features(path, url):
    m = Model.load(path)
    table = InProcessFeatureStore.load(path / "features", m.graph.num_users)
    RedisFeatureStore(redis.Redis.from_url(url), feature_prefix(m.meta), table.width, table.emb_dim).publish(
        np.asarray(table.table))


def wait_recovered(client, user: int) -> dict:
    """Requests `user` until an answer is no longer degraded (Redis is back and the breaker, which retries
    after redis_retry_s, closed), for at most 30 s."""
    deadline = time.monotonic() + 30
    while True:
        body = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
        if not body["degraded"] or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def serve(path, url, **kw):
    settings = ServeSettings(model=str(path), redis_url=url, redis_timeout_ms=200, redis_retry_s=0.2, **kw)
    svc = Service.from_settings(settings)
    return svc, TestClient(create_app(svc))


def test_cache_is_versioned_expires_and_invalidates(redis_server):
    link = RedisLink.from_url(redis_server.url)
    a = RedisCache(link, "v1", ttl_s=1)
    b = RedisCache(link, "v2", ttl_s=1)
    a.put(7, [[1, 0.5, 2, [3], "fof"]])
    assert a.get(7) == [[1, 0.5, 2, [3], "fof"]]
    assert b.get(7) is None  # another model version never serves it
    a.put(8, [[2, 0.1, 0, [], "ppr"]])
    a.invalidate([7])
    assert a.get(7) is None and a.get(8) is not None
    # the entry expires with the TTL given (Redis expires it; no sleep needed to see that it was set)
    assert 0 < redis.Redis.from_url(redis_server.url).pttl(a.key(8)) <= 1000


def test_cache_and_actions_live_in_redis_and_are_shared_by_workers(model_dir, redis_server):
    publish_features(model_dir, redis_server.url)
    svc1, c1 = serve(model_dir, redis_server.url)
    svc2, c2 = serve(model_dir, redis_server.url)  # a second worker: its own process state, same Redis
    assert svc1.cache.kind == "redis" and "features" in [f.name for f in svc1.fallbacks]
    user = 1005
    first = c1.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
    assert first["cached"] is False and first["degraded"] is False and len(first["recommendations"]) == 10
    assert redis.Redis.from_url(redis_server.url).exists(svc1.cache.key(user))
    hit = c2.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
    assert hit["cached"] is True and hit["recommendations"] == first["recommendations"]
    top = first["recommendations"][0]["user_id"]
    assert c1.post(f"/v1/users/{user}/dismissals", json={"candidate_id": top}).json()["degraded"] is False
    after = c2.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()  # the other worker
    assert after["cached"] is False and top not in [x["user_id"] for x in after["recommendations"]]
    # the features come from Redis in one MGET per uncached request
    fs = svc1.model.ranker.store
    svc1.cache.invalidate([user + 1])
    before = fs._primary.round_trips
    other = c1.get(f"/v1/users/{user + 1}/recommendations", params={"k": 10}).json()
    assert other["cached"] is False and other["degraded"] is False
    assert fs._primary.round_trips == before + 1


def test_degraded_mode_survives_redis_dying_and_recovers(model_dir, tmp_path):
    server = RedisServer(tmp_path)
    try:
        publish_features(model_dir, server.url)
        svc, c = serve(model_dir, server.url)
        ok = c.get("/v1/users/1010/recommendations", params={"k": 5}).json()
        assert ok["degraded"] is False
        server.stop(kill=True)
        statuses = []
        for user in (1010, 1011, 1012):
            r = c.get(f"/v1/users/{user}/recommendations", params={"k": 5})
            statuses.append(r.status_code)
            body = r.json()
            assert body["degraded"] is True and len(body["recommendations"]) == 5
            assert body["cached"] is False
        assert "features" in body["degraded_sources"] or "cache" in body["degraded_sources"]
        assert statuses == [200, 200, 200]
        r = c.post("/v1/edges", json={"src": 1011, "dst": 1500})
        assert r.status_code == 200 and r.json()["degraded"] is True
        assert 1500 not in [x["user_id"] for x in c.get("/v1/users/1011/recommendations").json()["recommendations"]]
        assert c.get("/readyz").json()["redis"] == "down"
        server.start()  # empty: no persistence; publish again as an operator would
        publish_features(model_dir, server.url)
        assert wait_recovered(c, 1012)["degraded"] is False
        # the friendship recorded while Redis was away was replayed into it
        assert redis.Redis.from_url(server.url).sismember("pymk:act:friends:1011", 1500)
        assert c.get("/readyz").json()["redis"] == "up"
        assert 'pymk_degraded_requests_total{source="features"}' in c.get("/metrics").text
    finally:
        if server.proc.poll() is None:
            server.stop()


def test_unreachable_redis_at_start_serves_embedded(model_dir):
    svc, c = serve(model_dir, "redis://127.0.0.1:1/0")  # nothing listens on port 1
    body = c.get("/v1/users/1003/recommendations", params={"k": 5}).json()
    assert body["degraded"] is True and len(body["recommendations"]) == 5


def test_link_breaker_skips_redis_until_retry():
    link = RedisLink.from_url("redis://127.0.0.1:1/0", timeout_ms=50, retry_s=60)
    with pytest.raises(RedisDown):
        link.call(lambda c: c.ping())
    with pytest.raises(RedisDown, match="retrying later"):
        link.call(lambda c: c.ping())
    assert link.failures == 1  # the second call did not reach the network


def _wait_asleep(url: str) -> None:
    """Returns once the server no longer answers a PING within 50 ms (DEBUG SLEEP has begun)."""
    probe = redis.Redis.from_url(url, socket_timeout=0.05)
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline, "the server never went to sleep"
        try:
            probe.ping()
        except redis.TimeoutError:
            return
        finally:
            probe.connection_pool.disconnect()


def test_slow_redis_times_out_into_degraded_mode(model_dir, tmp_path):
    """A Redis that hangs (DEBUG SLEEP) rather than dies: calls time out, requests are served degraded."""
    import threading

    server = RedisServer(tmp_path, "--enable-debug-command", "yes")
    try:
        publish_features(model_dir, server.url)
        svc, c = serve(model_dir, server.url)
        assert c.get("/v1/users/1020/recommendations", params={"k": 5}).json()["degraded"] is False
        hang = threading.Thread(target=lambda: redis.Redis.from_url(server.url).execute_command("DEBUG", "SLEEP", 2))
        hang.start()
        _wait_asleep(server.url)
        r = c.get("/v1/users/1021/recommendations", params={"k": 5})
        assert r.status_code == 200 and r.json()["degraded"] is True and len(r.json()["recommendations"]) == 5
        hang.join()
        assert wait_recovered(c, 1022)["degraded"] is False
    finally:
        server.stop()


def test_concurrent_actions_all_reach_redis(redis_server):
    from concurrent.futures import ThreadPoolExecutor

    from pymk.serving.actions import UserActions

    link = RedisLink.from_url(redis_server.url, timeout_ms=1000)
    actions = UserActions(link, prefix="pymk:test-act")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: actions.add("dismissed", 7, i), range(1, 401)))
    actions.flush()
    assert {int(x) for x in link.client.smembers("pymk:test-act:dismissed:7")} == set(range(1, 401))
    assert actions.excluded(7) == (set(range(1, 401)), False)


def test_cache_write_token_refuses_a_list_made_before_an_invalidation(redis_server):
    """5(a) across workers: two caches on one Redis; a worker's invalidation between another's read and
    write makes that write a no-op (Lua compare-and-set on the user's token)."""
    link = RedisLink.from_url(redis_server.url)
    one, two = RedisCache(link, "vt"), RedisCache(link, "vt")
    recs, token = one.get_with_token(424242)
    assert recs is None
    two.invalidate([424242])  # a block posted to the other worker
    one.put(424242, [[1, 0.5, 1, [], "fof"]], token)
    assert one.get(424242) is None
    recs, token = one.get_with_token(424242)
    one.put(424242, [[2, 0.5, 1, [], "fof"]], token)  # no invalidation since: written
    assert one.get_with_token(424242)[0] == [[2, 0.5, 1, [], "fof"]]
