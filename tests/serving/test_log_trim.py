"""A Redis event stream trimmed past a version's cut (`MAXLEN`) is refused wherever that version would start
from it, instead of silently serving a graph that misses acknowledged changes: `pymk update`, a worker
starting on the version, and a running service asked to swap to it (which keeps serving the version it has)."""

import shutil

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from pymk.cli import app as cli
from pymk.pipeline.lineage import lineage, stream_key
from pymk.pipeline.model import ModelError, read_model_meta
from pymk.serving.app import create_app
from pymk.serving.service import Service
from pymk.serving.settings import ServeSettings
from pymk.stream.log import RedisEventLog
from tests.helpers import build_learned_model

runner = CliRunner()
USERS = 200


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_learned_model(tmp_path_factory.mktemp("trim") / "n", users=USERS)


@pytest.fixture
def stream(built, redis_server):
    client = redis.Redis.from_url(redis_server.url)
    key = stream_key(lineage(read_model_meta(built)))
    client.delete(key)
    res = runner.invoke(cli, ["publish", "--model", str(built), "--redis", redis_server.url])  # its features
    assert res.exit_code == 0, res.output
    client.delete(key)
    yield client, key
    client.delete(key)


def _friendships(log, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(count):
        a, b = rng.choice(USERS, 2, replace=False).tolist()
        log.append(int(a), int(b), 2e9)


def _swaps(c, result: str) -> float:
    fams = text_string_to_metric_families(c.get("/metrics").text)
    return sum(s.value for f in fams for s in f.samples
               if s.name == "pymk_model_swaps_total" and s.labels.get("result") == result)


def test_update_and_a_starting_worker_refuse_a_stream_trimmed_past_the_cut(built, redis_server, stream, tmp_path):
    client, key = stream
    _friendships(RedisEventLog(client, key, maxlen=10), 120, seed=0)  # the oldest ~100 trimmed
    res = runner.invoke(cli, ["update", "--model", str(built), "--events", redis_server.url,
                              "--out", str(tmp_path / "n1")])
    assert res.exit_code == 1 and "dropped" in res.stderr and key in res.stderr, res.output
    assert not (tmp_path / "n1").exists()
    with pytest.raises(ModelError, match="cannot follow its event log"):
        Service.from_settings(ServeSettings(model=str(built), redis_url=redis_server.url))

    client.delete(key)  # the same events in a stream that kept them all: both go through
    _friendships(RedisEventLog(client, key), 120, seed=0)
    res = runner.invoke(cli, ["update", "--model", str(built), "--events", redis_server.url,
                              "--out", str(tmp_path / "n1")])
    assert res.exit_code == 0, res.output
    Service.from_settings(ServeSettings(model=str(built), redis_url=redis_server.url)).close()


def test_a_running_service_refuses_to_swap_to_a_version_whose_cut_was_trimmed(built, redis_server, stream,
                                                                             tmp_path, caplog):
    client, key = stream
    n0 = tmp_path / "n0"
    shutil.copytree(built, n0)
    settings = ServeSettings(model=str(n0), redis_url=redis_server.url, publish_poll_s=0.05, stream_block_ms=20)
    app = create_app(settings=settings)
    with TestClient(app) as c:
        v0 = c.get("/healthz").json()["model_version"]
        for a, b in ((1, 150), (2, 151), (3, 152)):
            assert c.post("/v1/edges", json={"src": a, "dst": b}).status_code == 200
        res = runner.invoke(cli, ["update", "--model", str(n0), "--events", redis_server.url,
                                  "--out", str(tmp_path / "n1")])
        assert res.exit_code == 0, res.output
        for a, b in ((4, 153), (5, 154)):  # after N+1's cut...
            assert c.post("/v1/edges", json={"src": a, "dst": b}).status_code == 200
        client.xtrim(key, maxlen=1, approximate=False)  # ...and the stream loses them
        res = runner.invoke(cli, ["publish", "--model", str(tmp_path / "n1"), "--redis", redis_server.url])
        assert res.exit_code == 0, res.output
        deadline_polls = 0
        while _swaps(c, "failed") < 1:
            deadline_polls += 1
            assert deadline_polls < 3000, "the swap was neither made nor refused"
            assert c.get("/healthz").json()["model_version"] == v0
        assert c.get("/healthz").json()["model_version"] == v0 and _swaps(c, "ok") == 0  # N keeps serving
        assert "cannot follow its event log" in caplog.text  # refused for the trim, not for another reason
        svc = app.state.service
        assert svc.model.graph.has_edge(*svc.model.index_of([5, 154]).tolist())
        assert c.post("/v1/edges", json={"src": 6, "dst": 155}).status_code == 200


def test_a_worker_whose_stream_was_trimmed_past_it_says_so_and_flags_its_answers(built, redis_server, stream):
    """A running worker that fell behind while the stream dropped events it had not read: its periodic check
    (`StreamWorker.check_gap`) finds it, /healthz names it, and every answer is flagged degraded ("stream")."""
    client, key = stream
    settings = ServeSettings(model=str(built), redis_url=redis_server.url, stream_block_ms=20, read_fence_s=0)
    app = create_app(settings=settings)
    with TestClient(app) as c:
        assert c.post("/v1/edges", json={"src": 1, "dst": 150}).status_code == 200
        svc = app.state.service
        assert svc.stream.check_gap() is None and c.get("/healthz").json()["stream"]["gap"] is None
        r = c.get("/v1/users/3/recommendations")
        assert r.status_code == 200 and "stream" not in r.json()["degraded_sources"]
        svc.stream.stop()  # the worker falls behind...
        _friendships(RedisEventLog(client, key, maxlen=5), 150, seed=1)  # ...while the stream trims past it
        assert key in svc.stream.check_gap()
        assert key in c.get("/healthz").json()["stream"]["gap"]
        r = c.get("/v1/users/3/recommendations")
        assert r.status_code == 200 and r.json()["degraded"] and "stream" in r.json()["degraded_sources"]
