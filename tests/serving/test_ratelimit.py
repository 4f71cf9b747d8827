"""Rate limits per API key (pymk.serving.ratelimit): the bucket itself, and through the app, alone and
shared by two services through a real Redis."""

import math

from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from pymk.serving.app import create_app
from pymk.serving.ratelimit import LocalBuckets
from pymk.serving.service import Service
from pymk.serving.settings import ServeSettings
from tests.serving.test_auth import bearer, create, model_dir  # noqa: F401  (fixture)


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@given(rate=st.floats(0.1, 50), burst=st.integers(1, 20),
       gaps=st.lists(st.floats(0, 2), min_size=1, max_size=200))
def test_bucket_admits_at_most_burst_plus_rate_times_elapsed(rate, burst, gaps):
    clock = Clock()
    b = LocalBuckets(rate, burst, clock=clock)
    start, admitted = clock.t, 0
    for g in gaps:
        clock.t += g
        wait = b.take("k")
        if wait == 0:
            admitted += 1
        else:  # refused: the wait it names is exactly when one token is back, and not before
            assert wait <= 1 / rate + 1e-9
            probe = LocalBuckets(rate, burst, clock=clock)
            probe._b = dict(b._b)
            clock.t += wait * 0.999
            assert probe.take("k") > 0
            clock.t += wait * 0.001 + 1e-9
            assert b.take("k") == 0
            admitted += 1
        assert admitted <= burst + rate * (clock.t - start) + 1e-6


def test_bucket_starts_full_and_callers_are_independent():
    clock = Clock()
    b = LocalBuckets(1.0, 3, clock=clock)
    assert [b.take("a") for _ in range(3)] == [0, 0, 0]
    assert math.isclose(b.take("a"), 1.0)
    assert b.take("b") == 0  # another caller's bucket is full
    clock.t += 1.0
    assert b.take("a") == 0 and b.take("a") > 0


def _client(model_dir, **kw):  # noqa: F811
    return TestClient(create_app(Service.from_settings(ServeSettings(model=str(model_dir), **kw))))


def test_429_with_retry_after_per_key(model_dir):  # noqa: F811
    a, b = create(model_dir, "recommendations:read"), create(model_dir, "recommendations:read")
    # one token per 100 s: the third request is over the limit however slow this machine is
    c = _client(model_dir, rate_limit=0.01, rate_burst=2)
    url = "/v1/users/100/recommendations"
    assert [c.get(url, headers=bearer(a)).status_code for _ in range(2)] == [200, 200]
    r = c.get(url, headers=bearer(a))
    assert r.status_code == 429 and 90 <= int(r.headers["retry-after"]) <= 100
    assert c.get(url, headers=bearer(b)).status_code == 200  # its own bucket
    assert c.get(url).status_code == 401  # no key: refused before it counts against anyone
    assert c.get("/healthz").status_code == 200
    assert 'pymk_auth_refusals_total{status="429"} 1.0' in c.get("/metrics").text


def test_without_keys_the_limit_is_per_client_address(model_dir):  # noqa: F811
    c = _client(model_dir, rate_limit=0.01, rate_burst=1)
    url = "/v1/users/100/recommendations"
    assert c.get(url).status_code == 200 and c.get(url).status_code == 429


def test_two_services_share_a_key_s_bucket_through_redis(model_dir, redis_server):  # noqa: F811
    key = create(model_dir, "recommendations:read")
    kw = {"redis_url": redis_server.url, "rate_limit": 0.01, "rate_burst": 3}
    one, two = _client(model_dir, **kw), _client(model_dir, **kw)
    url = "/v1/users/100/recommendations"
    got = [c.get(url, headers=bearer(key)).status_code for c in (one, two, one, two)]
    assert got == [200, 200, 200, 429]  # three tokens between both, not three each


def test_redis_down_falls_back_to_a_bucket_per_worker(model_dir, tmp_path):  # noqa: F811
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path)
    key = create(model_dir, "recommendations:read")
    c = _client(model_dir, redis_url=server.url, redis_timeout_ms=100, redis_retry_s=0.2, rate_limit=0.01,
                rate_burst=2)
    url = "/v1/users/100/recommendations"
    assert c.get(url, headers=bearer(key)).status_code == 200
    server.stop(kill=True)
    got = [c.get(url, headers=bearer(key)).status_code for _ in range(3)]
    assert got == [200, 200, 429]  # this worker's own full bucket, still limited; no 5xx
