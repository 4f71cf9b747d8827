import pytest
from fastapi.testclient import TestClient

from pymk.pipeline.build import build_from_edges
from pymk.pipeline.model import Model
from pymk.serving.app import create_app
from pymk.serving.service import Service
from pymk.serving.settings import ServeSettings
from tests.helpers import graph_from_pairs


def app_for(model, **settings):
    return TestClient(create_app(Service(model, ServeSettings(**settings))))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from pymk.graph.edges import EdgeList

    g = graph_from_pairs([(0, 1), (1, 2), (0, 3), (3, 2), (3, 4), (5, 6)], 7)
    lo, hi = g.edge_pairs()
    ids = g.ids * 10 + 100  # external ids differ from dense indices
    path = build_from_edges(EdgeList(ids, lo, hi), tmp_path_factory.mktemp("m") / "model", log=lambda s: None)
    return app_for(Model.load(path), max_k=1000)


def test_recommendations(client):
    from pymk.serving.app import RecommendationsResponse

    r = client.get("/v1/users/100/recommendations", params={"k": 3})
    assert r.status_code == 200
    body = r.json()
    assert RecommendationsResponse.model_validate(body).model_dump() == body  # the documented shape, exactly
    assert body["user_id"] == 100 and body["k"] == 3 and body["model_version"]
    recs = body["recommendations"]
    assert [x["user_id"] for x in recs[:2]] == [120, 140]
    assert recs[0]["mutual_friends"] == 2 and recs[0]["source"] == "fof+ppr" and recs[0]["rank"] == 1
    assert len(recs) == 3 and recs[2]["source"] == "popular"
    assert all(x["user_id"] not in (100, 110, 130) for x in recs)


def test_unknown_user_404(client):
    r = client.get("/v1/users/7/recommendations")
    assert r.status_code == 404 and "not in the model" in r.json()["detail"]


@pytest.mark.parametrize("url", ["/v1/users/100/recommendations?k=0", "/v1/users/100/recommendations?k=1001",
                                 "/v1/users/100/recommendations?k=x", "/v1/users/abc/recommendations",
                                 "/v1/users/99999999999999999999/recommendations",
                                 "/v1/users/-100/recommendations", "/v1/users/1.5/recommendations"])
def test_bad_parameters_422(client, url):
    assert client.get(url).status_code == 422


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["users"] == 7
    assert r.json()["stream"]["refreshed"] == 0  # no embeddings: only the graph follows posted edges


def test_degraded_sources_are_reported(tmp_path):
    """A user whose ranker features are missing (joined after the feature table) is still answered, and
    the response names the degraded source."""
    import numpy as np

    from pymk.features.store import InProcessFeatureStore
    from tests.helpers import build_learned_model

    path = build_learned_model(tmp_path / "m")
    m = Model.load(path)
    table = np.load(path / "features" / "users.npy")
    old = Model(path, m.meta, m.config, m.graph, feature_store=InProcessFeatureStore(table[:590], 0))
    c = app_for(old)
    new_user = int(old.graph.ids[595])
    r = c.get(f"/v1/users/{new_user}/recommendations", params={"k": 5})
    assert r.status_code == 200 and r.json()["degraded_sources"] == ["features"] and r.json()["degraded"] is True
    assert len(r.json()["recommendations"]) == 5
    full = app_for(m).get(f"/v1/users/{new_user}/recommendations", params={"k": 5}).json()
    assert full["degraded_sources"] == [] and full["degraded"] is False


def test_second_request_is_a_cache_hit_with_the_same_answer(client):
    a = client.get("/v1/users/120/recommendations", params={"k": 3}).json()
    b = client.get("/v1/users/120/recommendations", params={"k": 3}).json()
    assert a["cached"] is False and b["cached"] is True
    assert a["recommendations"] == b["recommendations"]
    c = client.get("/v1/users/120/recommendations", params={"k": 2}).json()
    assert c["cached"] is True and c["recommendations"] == a["recommendations"][:2]


def test_dismissal_takes_effect_on_the_next_request(client):
    first = client.get("/v1/users/100/recommendations", params={"k": 3}).json()["recommendations"]
    top = first[0]["user_id"]
    r = client.post("/v1/users/100/dismissals", json={"candidate_id": top})
    assert r.status_code == 200 and r.json()["invalidated"] == [100]
    after = client.get("/v1/users/100/recommendations", params={"k": 3}).json()
    assert after["cached"] is False and top not in [x["user_id"] for x in after["recommendations"]]


def test_block_is_mutual_and_new_edge_removes_the_friend(client):
    # 140 is 2 hops from 100 (via 110 and 130)
    assert 140 in [x["user_id"] for x in client.get("/v1/users/100/recommendations").json()["recommendations"]]
    assert client.post("/v1/users/140/blocks", json={"blocked_id": 100}).json()["invalidated"] == [100, 140]
    assert 140 not in [x["user_id"] for x in client.get("/v1/users/100/recommendations").json()["recommendations"]]
    assert 100 not in [x["user_id"] for x in client.get("/v1/users/140/recommendations").json()["recommendations"]]
    recs = client.get("/v1/users/150/recommendations").json()["recommendations"]
    assert 120 in [x["user_id"] for x in recs]
    assert client.post("/v1/edges", json={"src": 150, "dst": 120}).json()["invalidated"] == [120, 150]
    assert 120 not in [x["user_id"] for x in client.get("/v1/users/150/recommendations").json()["recommendations"]]
    assert 150 not in [x["user_id"] for x in client.get("/v1/users/120/recommendations").json()["recommendations"]]


@pytest.mark.parametrize("url,body", [
    ("/v1/users/100/dismissals", {"candidate_id": -1}),
    ("/v1/users/100/dismissals", {"candidate_id": "x"}),
    ("/v1/users/100/dismissals", {"candidate": 5}),
    ("/v1/users/100/dismissals", {"candidate_id": 100}),  # itself
    ("/v1/users/100/blocks", {}),
    ("/v1/edges", {"src": 1, "dst": 1}),
    ("/v1/edges", {"src": 1, "dst": 2**63}),
    ("/v1/edges", [1, 2]),
])
def test_bad_bodies_422(client, url, body):
    r = client.post(url, json=body)
    assert r.status_code == 422 and r.json()["detail"]


def test_self_action_names_what_was_refused(client):
    r = client.post("/v1/users/100/blocks", json={"blocked_id": 100})
    assert r.status_code == 422 and r.json()["detail"][0]["msg"] == "user 100 cannot block itself"


def test_oversized_body_413(client):
    r = client.post("/v1/edges", content=b'{"src": 1, "dst": 2, "pad": "' + b"x" * 10_000 + b'"}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]


def test_k_above_the_configured_maximum_422(tmp_path):
    from pymk.graph.edges import EdgeList

    g = graph_from_pairs([(0, 1), (1, 2)], 3)
    lo, hi = g.edge_pairs()
    m = Model.load(build_from_edges(EdgeList(g.ids, lo, hi), tmp_path / "m", log=lambda s: None))
    r = app_for(m, max_k=50).get("/v1/users/0/recommendations", params={"k": 51})
    assert r.status_code == 422 and "less than or equal to 50" in r.json()["detail"][0]["msg"]
    assert r.json()["detail"][0]["loc"] == ["query", "k"]


def test_metrics_and_readyz(client):
    client.get("/v1/users/100/recommendations")
    assert client.get("/readyz").json()["redis"] == "none"
    text = client.get("/metrics").text
    for step in ("eligibility", "cache", "stage1", "features", "rank", "filter", "explain", "truncate",
                 "cache_write"):
        assert f'pymk_step_seconds_count{{step="{step}"}}' in text
    assert 'pymk_cache_requests_total{result="hit"}' in text
    assert 'pymk_candidates_total{direction="out",step="filter"}' in text
