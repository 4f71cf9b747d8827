import pytest
from fastapi.testclient import TestClient

from pymk.pipeline.build import build_from_edges
from pymk.pipeline.model import Model
from pymk.serving.app import create_app
from tests.helpers import graph_from_pairs


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from pymk.graph.edges import EdgeList

    g = graph_from_pairs([(0, 1), (1, 2), (0, 3), (3, 2), (3, 4), (5, 6)], 7)
    lo, hi = g.edge_pairs()
    ids = g.ids * 10 + 100  # external ids differ from dense indices
    path = build_from_edges(EdgeList(ids, lo, hi), tmp_path_factory.mktemp("m") / "model", log=lambda s: None)
    return TestClient(create_app(Model.load(path)))


def test_recommendations(client):
    r = client.get("/v1/users/100/recommendations", params={"k": 3})
    assert r.status_code == 200
    body = r.json()
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
                                 "/v1/users/99999999999999999999/recommendations"])
def test_bad_parameters_422(client, url):
    assert client.get(url).status_code == 422


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["users"] == 7


def test_degraded_sources_are_reported(tmp_path):
    """A user whose ranker features are missing (joined after the feature table) is still answered, and
    the response names the degraded source."""
    import numpy as np

    from pymk.config import PymkConfig
    from pymk.features.store import InProcessFeatureStore
    from pymk.graph.edges import EdgeList
    from pymk.graph.synth import SynthConfig, generate

    src, dst, _ = generate(SynthConfig(600, 10, seed=3))
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    keys = np.unique(lo * 1000 + hi)
    cfg = PymkConfig()
    cfg.ranker.kind = "lightgbm"
    cfg.ranker.rounds = 20
    path = build_from_edges(EdgeList(np.arange(600, dtype=np.int64), (keys // 1000).astype(np.int32),
                                     (keys % 1000).astype(np.int32)), tmp_path / "m", cfg, log=lambda s: None)
    m = Model.load(path)
    table = np.load(path / "features" / "users.npy")
    old = Model(path, m.meta, m.config, m.graph, feature_store=InProcessFeatureStore(table[:590], 0))
    c = TestClient(create_app(old))
    new_user = int(old.graph.ids[595])
    r = c.get(f"/v1/users/{new_user}/recommendations", params={"k": 5})
    assert r.status_code == 200 and r.json()["degraded"] == ["features"] and len(r.json()["recommendations"]) == 5
    full = TestClient(create_app(m)).get(f"/v1/users/{new_user}/recommendations", params={"k": 5}).json()
    assert full["degraded"] == []
