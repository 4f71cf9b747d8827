"""The console's JSON (`pymk.console.api`) through the real app, against networkx and the ranker itself."""

import json
import shutil

import networkx as nx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from pymk.pipeline.model import Model
from pymk.serving.app import create_app
from pymk.serving.service import Service
from pymk.serving.settings import ServeSettings
from tests.helpers import build_learned_model
from tests.serving.test_auth import bearer, create


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_learned_model(tmp_path_factory.mktemp("console") / "m", users=300, id_offset=5000)


@pytest.fixture()
def model_dir(built, tmp_path):
    out = tmp_path / "m"
    shutil.copytree(built, out, ignore=shutil.ignore_patterns("stream"))
    return out


def _client(model_dir, **kw):
    return TestClient(create_app(Service(Model.load(model_dir), ServeSettings(model=str(model_dir), **kw))))


def _nx(model_dir) -> nx.Graph:
    g = Model.load(model_dir).graph
    ref = nx.Graph()
    ref.add_nodes_from(g.ids.tolist())
    ref.add_edges_from(zip(*(np.asarray(g.ids)[x].tolist() for x in g.edge_pairs()), strict=True))
    return ref


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """The same kind of model built with 2 shards: served as a ranking tier, it holds no adjacency."""
    return build_learned_model(tmp_path_factory.mktemp("console-sharded") / "m", users=300, id_offset=5000, shards=2)


@pytest.fixture(params=["whole graph", "ranking tier"])
def served(request, model_dir, sharded, tmp_path):
    """(client, model dir): the service over the whole graph, or a ranking tier over shard servers (their lists
    read per request: the console's ego networks and explanations read them the same way)."""
    if request.param == "whole graph":
        with _client(model_dir) as c:
            yield c, model_dir
        return
    out = tmp_path / "sharded"
    shutil.copytree(sharded, out, ignore=shutil.ignore_patterns("stream"))
    svc = Service.from_settings(ServeSettings(model=str(out), tier=True))
    assert svc.model.tier
    with TestClient(create_app(svc)) as c:
        yield c, out


def test_ego_network_is_the_users_recommendations_and_the_friends_linking_them(served):
    c, model_dir = served
    ref = _nx(model_dir)
    for user in sorted(ref.nodes)[:40:4]:
        ego = c.get(f"/v1/console/users/{user}/ego", params={"k": 8}).json()
        plain = c.get(f"/v1/users/{user}/recommendations", params={"k": 8}).json()
        assert [r["user_id"] for r in ego["recommendations"]] == [r["user_id"] for r in plain["recommendations"]]
        recs = {r["user_id"] for r in ego["recommendations"]}
        drawn = set(ego["friends_drawn"])
        assert ego["friends"] == ref.degree(user) and drawn <= set(ref[user])
        for a, b in ego["edges"]:
            assert ref.has_edge(a, b), (a, b)  # every line drawn is a friendship
        # every mutual friend of a drawn candidate is drawn (up to the cap) with its link
        links = {(a, b) for a, b in ego["edges"]}
        for r in ego["recommendations"]:
            mutual = set(nx.common_neighbors(ref, user, r["user_id"]))
            assert r["mutual_friends"] == len(mutual)
            if len(drawn) < 40:
                assert mutual <= drawn and all((f, r["user_id"]) in links for f in mutual)
        assert drawn <= {f for f in ref[user] if recs & set(ref[f])}  # only friends that link to someone shown


def test_explanation_agrees_with_the_answer_and_the_booster(served):
    c, model_dir = served
    ref = _nx(model_dir)
    m = Model.load(model_dir)
    assert m.ranker_kind == "lightgbm"
    user = sorted(ref.nodes)[7]
    recs = c.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()["recommendations"]
    assert recs
    for r in recs:
        x = c.get(f"/v1/console/users/{user}/explanations/{r['user_id']}").json()
        assert x["in_stage1"] and x["rank"] == r["rank"] and x["score"] == pytest.approx(r["score"], abs=1e-9)
        assert x["sources"] == r["source"].split("+")
        mutual = set(nx.common_neighbors(ref, user, r["user_id"]))
        assert x["mutual_friends"] == len(mutual) and set(x["mutual_sample"]) == mutual
        assert x["signals"]["cn"] == len(mutual)
        contrib = x["contributions"]
        total = contrib["bias"] + sum(f["contribution"] for f in contrib["features"])
        assert total == pytest.approx(x["score"], rel=1e-6, abs=1e-9)  # SHAP values add up to the score
        assert {f["name"] for f in contrib["features"]} == set(m.ranker.meta["features"])
    friend = next(iter(ref[user]))
    x = c.get(f"/v1/console/users/{user}/explanations/{friend}").json()
    assert x["friends"] and not x["in_stage1"] and x["reason"] == "already friends"
    assert c.post(f"/v1/users/{user}/blocks", json={"blocked_id": recs[0]["user_id"]}).status_code == 200
    x = c.get(f"/v1/console/users/{user}/explanations/{recs[0]['user_id']}").json()
    assert not x["in_stage1"] and x["reason"].startswith("excluded")
    assert c.get(f"/v1/console/users/{user}/explanations/999999999").status_code == 404
    assert c.get("/v1/console/users/999999999/ego").status_code == 404
    assert c.get(f"/v1/console/users/{user}/ego", params={"k": 0}).status_code == 422


def test_model_card_with_and_without_an_evaluation(model_dir):
    with _client(model_dir) as c:
        card = c.get("/v1/console/model").json()
        meta = json.loads((model_dir / "model.json").read_text())
        assert card["model_version"] == Model.load(model_dir).version and card["stages"] == meta["stages"]
        assert card["evaluation"] is None
    (model_dir / "eval.json").write_text(json.dumps({"dataset": "x", "methods": {"pymk": {"recall@20": 0.5}}}))
    with _client(model_dir) as c:
        assert c.get("/v1/console/model").json()["evaluation"]["methods"]["pymk"]["recall@20"] == 0.5
    (model_dir / "eval.json").write_text("{not json")
    with _client(model_dir) as c:
        card = c.get("/v1/console/model").json()
        assert card["evaluation"] is None and "not JSON" in card["evaluation_error"]


def test_stats_count_what_the_service_served(model_dir):
    with _client(model_dir) as c:
        users = sorted(_nx(model_dir).nodes)[:12]
        for u in users + users[:5]:  # 12 computed, then 5 from the cache
            assert c.get(f"/v1/users/{u}/recommendations").status_code == 200
        s = c.get("/v1/console/stats").json()
        assert s["requests"] == {"cached": 5, "uncached": 12}
        assert s["cache"]["hit"] == 5 and s["cache_hit_rate"] == pytest.approx(5 / 17)
        assert s["steps"]["stage1"]["count"] == 12 and s["steps"]["cache"]["count"] == 17
        assert 0 < s["steps"]["stage1"]["p50_ms"] <= s["steps"]["stage1"]["p99_ms"]
        assert s["redis"] == "none" and s["degraded"] == {}


def test_console_needs_the_admin_scope(model_dir):
    admin, reader = create(model_dir, "admin"), create(model_dir, "recommendations:read")
    with _client(model_dir) as c:
        user = Model.load(model_dir).graph.ids[0]
        assert c.get("/console").status_code == 200  # the page holds no data: it asks for a key
        assert "cytoscape.min.js" in c.get("/console").text
        for path in (f"/v1/console/users/{user}/ego", "/v1/console/model", "/v1/console/stats"):
            assert c.get(path).status_code == 401
            assert c.get(path, headers=bearer(reader)).status_code == 403
            assert c.get(path, headers=bearer(admin)).status_code == 200


def test_a_started_service_keeps_its_objects_out_of_the_collections_requests_trigger(model_dir):
    """Once started, the service's objects (model, ranker, libraries) are frozen out of the garbage collector's
    generations, so the full collections that requests trigger scan only what was made since; stopped, they
    are the collector's again."""
    import gc

    with _client(model_dir) as c:
        svc = c.app.state.service
        user = Model.load(model_dir).graph.ids[0]
        assert c.get(f"/v1/users/{user}/recommendations").status_code == 200
        assert gc.get_freeze_count() > 0
        tracked = {id(o) for o in gc.get_objects()}
        assert id(svc) not in tracked and id(svc.model) not in tracked and id(svc.model.meta) not in tracked
    assert gc.get_freeze_count() == 0 and id(svc.model.meta) in {id(o) for o in gc.get_objects()}


def test_the_service_gives_freed_heap_back_while_it_runs(model_dir):
    """`pymk serve`'s heap trimmer runs in the app's lifespan (`PYMK_HEAP_TRIM_S`) and stops with it."""
    import ctypes.util

    if not ctypes.util.find_library("c"):
        pytest.skip("no libc to ask")
    with _client(model_dir, heap_trim_s=0.05) as c:
        trimmer = c.app.state.trimmer
        assert trimmer.ran.wait(30) and trimmer.runs >= 1
    assert not trimmer._thread.is_alive()
    with _client(model_dir, heap_trim_s=0) as c:
        assert not c.app.state.trimmer._thread.is_alive()


def test_display_names_from_the_operators_file_and_a_bad_file_named_by_line(model_dir, tmp_path):
    from pymk.console.names import UserNames, UserNamesError

    ref = _nx(model_dir)
    named = {u: f"Name {u}, the {u % 5}th" for u in sorted(ref.nodes)[::3]}
    names = tmp_path / "names.csv"
    with open(names, "w", newline="") as f:
        import csv

        w = csv.writer(f)
        w.writerow(["id", "name"])
        w.writerows(named.items())
    with _client(model_dir, user_names=str(names)) as c:
        user = sorted(ref.nodes)[4]
        ego = c.get(f"/v1/console/users/{user}/ego", params={"k": 10}).json()
        shown = {user, *ego["friends_drawn"], *(r["user_id"] for r in ego["recommendations"]),
                 *(m for r in ego["recommendations"] for m in r["mutual_sample"])}
        assert {int(k): v for k, v in ego["names"].items()} == {u: named[u] for u in shown if u in named}
        cand = ego["recommendations"][0]["user_id"]
        x = c.get(f"/v1/console/users/{user}/explanations/{cand}").json()
        assert {int(k): v for k, v in x["names"].items()} == \
            {u: named[u] for u in {user, cand, *x["mutual_sample"]} if u in named}
    for text, where in (("user,name\n1,a\n", ":1:"), ("id,name\n1,a\n2\n", ":3:"), ("id,name\nx,a\n", ":2:"),
                        ("id,name\n1,a\n\n1,b\n", ":4:")):
        names.write_text(text)
        with pytest.raises(UserNamesError, match=where):
            UserNames.load(names)
        with pytest.raises(UserNamesError, match=where):  # the service does not start on it
            _client(model_dir, user_names=str(names))
