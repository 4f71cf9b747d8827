"""The living graph through the HTTP API: new users, unfriending, erasure, the cache race, and every
worker applying every action; checked against networkx on the resulting graph and against `pymk
recommend --live` on the same model directory."""

import csv
import threading

import networkx as nx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from pymk.cli import app as cli
from pymk.serving.app import create_app
from pymk.serving.service import Service
from pymk.serving.settings import ServeSettings
from tests.helpers import build_learned_model

OFFSET = 1000  # external id = dense index + OFFSET


@pytest.fixture()
def model_dir(tmp_path):
    return build_learned_model(tmp_path / "m", users=300, id_offset=OFFSET)


def _service(path, **kw):
    return Service.from_settings(ServeSettings(model=str(path), stream_block_ms=20, **kw))


def _ref(svc) -> nx.Graph:
    """networkx over the build's edges (external ids)."""
    g = svc.model.snapshot
    lo, hi = g.edge_pairs()
    ref = nx.Graph()
    ref.add_nodes_from(g.ids.tolist())
    ref.add_edges_from(zip(g.ids[lo].tolist(), g.ids[hi].tolist(), strict=True))
    return ref


def _check_answer(c, ref, user, *, never=()):
    r = c.get(f"/v1/users/{user}/recommendations", params={"k": 50})
    assert r.status_code == 200, r.text
    for rec in r.json()["recommendations"]:
        cand = rec["user_id"]
        assert cand != user and not ref.has_edge(user, cand) and cand not in never
        common = set(ref[user]) & set(ref[cand])
        assert rec["mutual_friends"] == len(common), (user, cand)
        assert set(rec["mutual_sample"]) <= common
    return r.json()["recommendations"]


def test_new_users_unfriending_and_erasure_end_to_end(model_dir):
    svc = _service(model_dir)
    try:
        c = TestClient(create_app(svc))
        ref = _ref(svc)
        deg = dict(ref.degree())
        hub = max(deg, key=deg.get)
        # a new user: 404 before it appears, served from its first friendship on
        new = 9_999_999
        assert c.get(f"/v1/users/{new}/recommendations").status_code == 404
        friends = sorted(ref[hub])[:3]
        for f in friends:
            assert c.post("/v1/edges", json={"src": new, "dst": f}).status_code == 200
            ref.add_edge(new, f)
        recs = _check_answer(c, ref, new)
        assert recs and any(r["mutual_friends"] > 0 for r in recs)  # friends-of-friends from the first edges
        # ... and a candidate for others: a friend of its friend sees it with the right mutual count
        other = next(v for v in ref[friends[0]] if v != new and not ref.has_edge(v, new))
        got = {r["user_id"]: r for r in _check_answer(c, ref, other)}
        if new in got:
            assert got[new]["mutual_friends"] == len(set(ref[new]) & set(ref[other]))
        assert c.get("/healthz").json()["stream"]["new_users"] == 1
        # unfriending: gone from every signal at once, never recommended back, idempotent, 404 for unknown
        a = hub
        b = sorted(ref[a])[-1]
        r = c.delete(f"/v1/users/{a}/friends/{b}")
        assert r.status_code == 200 and r.json()["changed"] is True
        ref.remove_edge(a, b)
        for u in (a, b):
            recs = _check_answer(c, ref, u, never={b if u == a else a})
        r = c.delete(f"/v1/users/{a}/friends/{b}")
        assert r.status_code == 200 and r.json()["changed"] is False  # not friends any more: nothing to do
        assert c.delete(f"/v1/users/{a}/friends/123").status_code == 404
        assert c.delete(f"/v1/users/{a}/friends/{a}").status_code == 422
        # erasure: its own answer 404, in nobody's answer, no count or sample includes it
        gone = sorted(ref[a])[0]
        d_gone = ref.degree(gone)
        r = c.delete(f"/v1/users/{gone}")
        assert r.status_code == 200, r.text
        ref.remove_node(gone)
        assert c.get(f"/v1/users/{gone}/recommendations").status_code == 404
        assert c.delete(f"/v1/users/{gone}").status_code == 404  # already erased
        assert c.post("/v1/edges", json={"src": gone, "dst": a}).status_code == 404  # never resurrected
        assert c.delete("/v1/users/123456").status_code == 404  # erasing a user never seen
        # an event for the erased user that reaches the log anyway (another writer): ignored and counted
        pos = svc.stream_log.append(gone, a, None, "add")
        assert svc.stream.wait_applied(pos, timeout=10)
        assert c.get("/healthz").json()["stream"]["ignored"] == 1
        assert c.get(f"/v1/users/{gone}/recommendations").status_code == 404
        for u in sorted(ref.nodes):
            for rec in _check_answer(c, ref, u, never={gone}):
                assert gone not in rec["mutual_sample"]
        health = c.get("/healthz").json()["stream"]
        assert health["erased"] == 1 and health["removed_edges"] == 1 + d_gone
    finally:
        svc.close()
    # a restarted worker replays the log: the erasure, the new user and the unfriending hold
    again = _service(model_dir)
    try:
        c = TestClient(create_app(again))
        assert c.get(f"/v1/users/{gone}/recommendations").status_code == 404
        assert c.get(f"/v1/users/{new}/recommendations").status_code == 200
        for u in (a, b, new):
            _check_answer(c, ref, u, never={gone, b if u == a else a if u == b else -1})
    finally:
        again.close()


def test_http_answers_equal_pymk_recommend_live_after_events(model_dir, tmp_path):
    svc = _service(model_dir, cache_size=0)
    try:
        c = TestClient(create_app(svc))
        ref = _ref(svc)
        rng = np.random.default_rng(3)
        users = sorted(ref.nodes)
        for _ in range(15):
            x, y = rng.choice(users, 2, replace=False).tolist()
            c.post("/v1/edges", json={"src": x, "dst": y})
        c.post("/v1/edges", json={"src": 7_000_000, "dst": users[0]})
        c.post("/v1/edges", json={"src": 7_000_000, "dst": users[1]})
        x = users[5]
        c.delete(f"/v1/users/{x}/friends/{sorted(ref[x])[0]}")
        c.delete(f"/v1/users/{users[9]}")
        c.post(f"/v1/users/{users[2]}/blocks", json={"blocked_id": users[3]})
        c.post(f"/v1/users/{users[4]}/dismissals", json={"candidate_id": users[6]})
        ids = [u for u in users if u != users[9]] + [7_000_000]
        (tmp_path / "u.txt").write_text("\n".join(map(str, ids)))
        res = CliRunner().invoke(cli, ["recommend", "--model", str(model_dir), "--users", str(tmp_path / "u.txt"),
                                       "--k", "20", "--out", str(tmp_path / "r.csv"), "--live"])
        assert res.exit_code == 0, res.output
        rows: dict[int, list] = {}
        with open(tmp_path / "r.csv") as f:
            for r in csv.DictReader(f):
                sample = [int(x) for x in r["mutual_sample"].split(";") if x]
                rows.setdefault(int(r["user_id"]), []).append(
                    (int(r["candidate_id"]), int(r["mutual_friends"]), sample, r["source"], float(r["score"])))
        for u in ids:  # one recommend path: every field of every row equal
            http = c.get(f"/v1/users/{u}/recommendations", params={"k": 20}).json()["recommendations"]
            assert [(h["user_id"], h["mutual_friends"], h["mutual_sample"], h["source"], round(h["score"], 6))
                    for h in http] == rows.get(u, []), u
        res = CliRunner().invoke(cli, ["recommend", "--model", str(model_dir), "--users", str(tmp_path / "u.txt"),
                                       "--k", "20", "--out", str(tmp_path / "r2.csv")])
        assert res.exit_code == 0 and "live events that this answer ignores" in res.output
    finally:
        svc.close()


def test_a_change_during_a_request_is_not_overwritten_by_its_cache_write(model_dir, monkeypatch):
    """5(a): the request computes its list, a block lands, then the request writes its cache entry: the
    stale list must not be served afterwards. The interleaving is forced with events, not sleeps."""
    from pymk.serving import flow
    from pymk.serving.steps import rank

    svc = _service(model_dir, stream=False)  # no stream worker: only the request path touches the cache
    try:
        c = TestClient(create_app(svc))
        user = int(svc.model.graph.ids[0])
        first = c.get(f"/v1/users/{user}/recommendations").json()["recommendations"][0]["user_id"]
        c.post(f"/v1/users/{user}/dismissals", json={"candidate_id": 10**9})  # drops the cached list
        ranked, go = threading.Event(), threading.Event()
        real = rank.run

        def paused(req, s):
            real(req, s)
            ranked.set()
            go.wait(10)

        monkeypatch.setattr(flow, "STEPS", tuple((n, paused if n == "rank" else f, h) for n, f, h in flow.STEPS))
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", svc.recommend(user, 20)))
        t.start()
        assert ranked.wait(10)
        assert c.post(f"/v1/users/{user}/blocks", json={"blocked_id": first}).status_code == 200
        go.set()
        t.join(10)
        assert first in [r[0] for r in out["r"].response]  # the in-flight request answered from the old state
        monkeypatch.setattr(flow, "STEPS", flow.STEPS)
        after = c.get(f"/v1/users/{user}/recommendations").json()
        assert first not in [r["user_id"] for r in after["recommendations"]]  # its cache write was refused
    finally:
        svc.close()


def test_every_worker_applies_every_action_without_redis(model_dir):
    """5(b): two workers of one machine share the file event log: a block, a dismissal, an unfriending and
    an erasure posted to one reach the other."""
    one, two = _service(model_dir), _service(model_dir)
    try:
        c1, c2 = TestClient(create_app(one)), TestClient(create_app(two))
        user = int(one.model.graph.ids[0])
        top = [r["user_id"] for r in c2.get(f"/v1/users/{user}/recommendations").json()["recommendations"]]
        assert c1.post(f"/v1/users/{user}/blocks", json={"blocked_id": top[0]}).status_code == 200
        assert c1.post(f"/v1/users/{user}/dismissals", json={"candidate_id": top[1]}).status_code == 200
        gone = top[2]
        assert c1.delete(f"/v1/users/{gone}").status_code == 200
        pos = one.stream.position
        assert two.stream.wait_applied(pos, timeout=10)
        recs = [r["user_id"] for r in c2.get(f"/v1/users/{user}/recommendations").json()["recommendations"]]
        assert not {top[0], top[1], gone} & set(recs)
        assert c2.get(f"/v1/users/{gone}/recommendations").status_code == 404
        # blocks go both ways, in the other worker too
        back = [r["user_id"] for r in c2.get(f"/v1/users/{top[0]}/recommendations",
                                             params={"k": 300}).json()["recommendations"]]
        assert user not in back
    finally:
        one.close()
        two.close()


def test_a_rebuild_from_the_original_edges_plus_the_log_leaves_the_erased_user_out(model_dir, tmp_path):
    from pymk.graph.synth import write_edges
    from pymk.pipeline.model import Model

    svc = _service(model_dir)
    g = svc.model.snapshot
    lo, hi = g.edge_pairs()
    edges = write_edges(tmp_path / "orig.csv", g.ids[lo], g.ids[hi], None)
    ref = _ref(svc)
    try:
        c = TestClient(create_app(svc))
        victim = int(g.ids[int(np.argmax(g.degree))])
        x, y = sorted(ref.nodes)[:2]
        assert c.delete(f"/v1/users/{victim}").status_code == 200
        c.post("/v1/edges", json={"src": x, "dst": 5_000_000})
        c.post("/v1/edges", json={"src": 5_000_000, "dst": y})
        ref.remove_node(victim)
        ref.add_edges_from([(x, 5_000_000), (5_000_000, y)])
    finally:
        svc.close()
    res = CliRunner().invoke(cli, ["build", "--edges", str(edges), "--out", str(tmp_path / "m2"), "--events",
                                   str(model_dir / "stream" / "events.log")])
    assert res.exit_code == 0, res.output
    m2 = Model.load(tmp_path / "m2")
    assert victim not in set(m2.graph.ids.tolist()) and 5_000_000 in set(m2.graph.ids.tolist())
    lo2, hi2 = m2.graph.edge_pairs()
    got = nx.Graph()
    got.add_edges_from(zip(m2.graph.ids[lo2].tolist(), m2.graph.ids[hi2].tolist(), strict=True))
    assert set(map(frozenset, got.edges)) == set(map(frozenset, ref.edges))
