"""Undiscoverable users (`PUT /v1/users/{id}/settings {"discoverable": false}`): never recommended to
anyone, cached answers included, while still served their own recommendations; in every worker through
the event log; carried to the next model version."""

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.config import PymkConfig
from pymk.graph.edges import EdgeList
from pymk.pipeline.build import build_from_edges
from pymk.pipeline.model import Model
from pymk.pipeline.standing import Standing
from pymk.pipeline.update import snapshot_edges, update
from pymk.serving.app import create_app
from pymk.serving.service import Service
from pymk.serving.settings import ServeSettings
from pymk.stream.log import FileEventLog
from tests.helpers import graph_from_pairs, synth_graph

CFG = PymkConfig.from_dict({"ranker": {"kind": "adamic_adar"}})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    g = synth_graph(120, 6, seed=4)
    return build_from_edges(snapshot_edges(g), tmp_path_factory.mktemp("disc") / "model", CFG, log=lambda s: None)


def _client(model_dir, tmp_path, **kw):
    # each client its own event log: hypothesis examples must not see each other's settings
    svc = Service.from_settings(ServeSettings(model=str(model_dir), stream_log=str(tmp_path), **kw))
    return TestClient(create_app(svc))


def _recs(c, uid, k=60):
    r = c.get(f"/v1/users/{uid}/recommendations", params={"k": k})
    assert r.status_code == 200, r.text
    return [x["user_id"] for x in r.json()["recommendations"]]


@settings(max_examples=12)
@given(data=st.data())
def test_hidden_users_are_recommended_to_no_one(model_dir, tmp_path_factory, data):
    ids = np.asarray(Model.load(model_dir).graph.ids).tolist()
    log = tmp_path_factory.mktemp("log") / "events.log"
    with _client(model_dir, log) as c:
        watch = data.draw(st.lists(st.sampled_from(ids), min_size=5, max_size=12, unique=True), label="readers")
        for uid in watch:
            _recs(c, uid)  # cache their answers first: the property must hold for cached answers too
        hidden = set()
        steps = data.draw(st.lists(st.tuples(st.sampled_from(ids), st.booleans()), min_size=1, max_size=8),
                          label="settings")
        for uid, visible in steps:
            r = c.put(f"/v1/users/{uid}/settings", json={"discoverable": visible})
            assert r.status_code == 200 and r.json()["degraded"] is False
            assert r.json()["changed"] == ((uid in hidden) == visible)
            (hidden.discard if visible else hidden.add)(uid)
            for reader in watch:
                assert not hidden & set(_recs(c, reader)), reader
            for h in hidden:
                assert c.get(f"/v1/users/{h}/settings").json()["discoverable"] is False
                assert c.get(f"/v1/users/{h}/recommendations").status_code == 200  # still served its own


def test_shown_again_can_be_recommended(tmp_path):
    # 0 - 1 - 2: 2 is 0's only friend-of-friend
    g = graph_from_pairs([(0, 1), (1, 2), (3, 4)], 5)
    lo, hi = g.edge_pairs()
    d = build_from_edges(EdgeList(g.ids, lo, hi), tmp_path / "m", CFG, log=lambda s: None)
    with _client(d, tmp_path / "events.log", cache_size=0) as c:
        assert _recs(c, 0)[0] == 2
        c.put("/v1/users/2/settings", json={"discoverable": False})
        assert 2 not in _recs(c, 0)
        c.put("/v1/users/2/settings", json={"discoverable": True})
        assert _recs(c, 0)[0] == 2
        assert c.put("/v1/users/9/settings", json={"discoverable": False}).status_code == 404
        assert c.put("/v1/users/2/settings", json={"discoverable": "no"}).status_code == 422
        assert c.put("/v1/users/2/settings", json={"visible": False}).status_code == 422


def test_another_worker_follows_through_the_log(model_dir, tmp_path):
    log = tmp_path / "events.log"
    with _client(model_dir, log) as a, _client(model_dir, log) as b:
        ids = np.asarray(Model.load(model_dir).graph.ids)
        reader = int(ids[0])
        target = _recs(b, reader)[0]  # b has it cached now
        assert a.put(f"/v1/users/{target}/settings", json={"discoverable": False}).status_code == 200
        # no wait here: b's next request waits for b to apply what the log holds (`steps/sync.py`)
        r = b.get(f"/v1/users/{reader}/recommendations", params={"k": 60}).json()
        assert not r["degraded"] and target not in [x["user_id"] for x in r["recommendations"]]


def test_a_worker_behind_the_log_says_so(model_dir, tmp_path):
    """A worker whose stream worker is stopped cannot apply what another acknowledged: its answers say
    `degraded: ["stream"]` after the fence's wait instead of passing for current; once it has applied the
    log, the hidden user is gone from them. With the fence off the stale answer passes unflagged."""
    log = tmp_path / "events.log"
    with _client(model_dir, log) as a, _client(model_dir, log, read_fence_s=0.2) as b, \
            _client(model_dir, log, read_fence_s=0) as c:
        ids = np.asarray(Model.load(model_dir).graph.ids)
        reader = int(ids[0])
        target = _recs(b, reader)[0]
        assert target in _recs(c, reader)
        for svc in (b.app.state.service, c.app.state.service):
            svc.stream.stop()
        assert a.put(f"/v1/users/{target}/settings", json={"discoverable": False}).status_code == 200
        r = b.get(f"/v1/users/{reader}/recommendations", params={"k": 60}).json()
        assert r["degraded_sources"] == ["stream"] and target in [x["user_id"] for x in r["recommendations"]]
        r = c.get(f"/v1/users/{reader}/recommendations", params={"k": 60}).json()
        assert not r["degraded"] and target in [x["user_id"] for x in r["recommendations"]]  # the hazard
        b.app.state.service.stream.drain()
        r = b.get(f"/v1/users/{reader}/recommendations", params={"k": 60}).json()
        assert not r["degraded"] and target not in [x["user_id"] for x in r["recommendations"]]


def test_the_next_version_keeps_it(model_dir, tmp_path):
    ids = np.asarray(Model.load(model_dir).graph.ids)
    who = int(ids[5])
    log = FileEventLog(tmp_path / "events.log")
    log.append(who, who, 2e9, "hide")
    out = update(model_dir, tmp_path / "events.log", tmp_path / "n1", log=lambda s: None)
    assert Standing.load(out).hidden.tolist() == [who]
    m = Model.load(out)
    users = m.index_of(ids[ids != who])
    cand = m.candidates(users).cand
    assert not (cand == int(m.index_of([who])[0])).any()
    assert who in m.graph.hidden_ids
