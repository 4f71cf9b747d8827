"""Posted friendships refresh the served embeddings (the stream worker inside each service)."""

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from pymk.cli import app
from pymk.graph.synth import SynthConfig, generate, write_edges
from pymk.serving.app import create_app
from pymk.serving.service import Service
from pymk.serving.settings import ServeSettings
from pymk.stream.adjacency import LiveAdjacency
from tests.helpers import nx_graph
from tests.stream.test_refresh import _full


@pytest.fixture(scope="module")
def gnn_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live")
    edges = write_edges(tmp / "e.csv", *generate(SynthConfig(400, 8, seed=5)))
    cfg = tmp / "gnn.toml"
    cfg.write_text('[gnn]\nenabled = true\nepochs = 1\ndim = 16\n[candidates.ann]\nkind = "hnsw"\n')
    out = tmp / "m"
    res = CliRunner().invoke(app, ["build", "--edges", str(edges), "--out", str(out), "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    return out


def _wait(cond, timeout=10.0):
    t = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < t, "the stream worker did not apply the edge in time"
        time.sleep(0.02)


def _non_friends(graph):
    deg = np.asarray(graph.degree)
    a = int(np.argsort(-deg, kind="stable")[5])
    b = next(v for v in np.argsort(deg, kind="stable").tolist() if v != a and v not in set(graph.neighbors(a).tolist()))
    return a, b


def _expected(svc, pairs):
    from pymk.gnn.model import degree_stats
    from pymk.gnn.train import load_checkpoint
    from pymk.graph.snapshot import CSRGraph

    g = CSRGraph.load(svc.model.path / "graph")  # the build's snapshot (the service may have swapped its graph)
    adj = LiveAdjacency(g)
    adj.add(*np.array(pairs).T)
    return _full(load_checkpoint(svc.model.path / "gnn", g), adj, degree_stats(g.degree))[0], adj


def test_posted_edge_refreshes_embeddings_ann_and_survives_a_restart(gnn_model, tmp_path):
    settings = ServeSettings(model=str(gnn_model), stream_log=str(tmp_path / "events.log"), stream_block_ms=20)
    svc = Service.from_settings(settings)
    try:
        assert svc.stream is not None
        g = svc.model.graph
        edges0 = g.num_edges
        before = np.array(svc.model.embeddings)
        np.testing.assert_allclose(before, np.load(gnn_model / "gnn" / "embeddings.npy"), atol=1e-4)
        a, b = _non_friends(g)
        c = TestClient(create_app(svc))
        r = c.post("/v1/edges", json={"src": int(g.ids[a]), "dst": int(g.ids[b])})
        assert r.status_code == 200 and not r.json()["degraded"]
        _wait(lambda: svc.stream.stats.new_edges == 1)
        want, adj = _expected(svc, [(a, b)])
        ring = adj.ball([a, b], 1)  # the brief's policy: A, B and their friends, exactly
        np.testing.assert_allclose(svc.model.embeddings[ring], want[ring], rtol=1e-4, atol=1e-5)
        assert not np.allclose(before[a], want[a])
        # Stage 1 searches the new vectors: the ANN finds b's new vector as its own nearest by inner product
        _, got = svc.model.ann.search(want[[a]], 50)
        exact = np.argsort(-(want @ want[a]), kind="stable")[:50]
        assert len(set(got[0].tolist()) & set(exact.tolist())) >= 45
        assert 'pymk_stream_events_total 1.0' in c.get("/metrics").text
        health = c.get("/healthz").json()["stream"]
        assert health["events"] == health["new_edges"] == 1 and health["refreshed"] == ring.size
        # Stage 1 reads the new friendship from the live graph's delta as soon as the post answered: a's
        # recommendations count b as a mutual friend of b's friends, as networkx does on the graph plus the edge
        assert svc.model.graph.num_edges == edges0 + 1
        ref = nx_graph(svc.model.graph)
        assert ref.has_edge(a, b) and ref.number_of_edges() == edges0 + 1
        recs = c.get(f"/v1/users/{int(g.ids[a])}/recommendations", params={"k": 200}).json()["recommendations"]
        index = {int(u): i for i, u in enumerate(g.ids.tolist())}
        through_b = 0
        for rec in recs:
            cand = index[rec["user_id"]]
            assert not ref.has_edge(a, cand) and cand != a
            common = set(ref.neighbors(a)) & set(ref.neighbors(cand))
            assert rec["mutual_friends"] == len(common)
            through_b += b in common
        assert through_b > 0  # b's friends reached a's friends-of-friends
        assert c.get(f"/v1/users/{int(g.ids[b])}/recommendations").status_code == 200
    finally:
        svc.close()
    again = Service.from_settings(settings)  # a restarted worker replays the log
    try:
        np.testing.assert_allclose(again.model.embeddings[ring], want[ring], rtol=1e-4, atol=1e-5)
        assert again.model.graph.num_edges == edges0 + 1
    finally:
        again.close()


def test_two_workers_on_one_redis_stream_both_refresh(gnn_model, redis_server):
    res = CliRunner().invoke(app, ["publish", "--model", str(gnn_model), "--redis", redis_server.url])
    assert res.exit_code == 0, res.output
    settings = ServeSettings(model=str(gnn_model), redis_url=redis_server.url, stream_block_ms=20)
    one, two = Service.from_settings(settings), Service.from_settings(settings)
    try:
        g = one.model.graph
        a, b = _non_friends(g)
        a, b = b, int(np.argsort(-np.asarray(g.degree), kind="stable")[9])  # another pair than the file test
        if b in set(g.neighbors(a).tolist()):
            pytest.skip("picked friends")
        r = TestClient(create_app(one)).post("/v1/edges", json={"src": int(g.ids[a]), "dst": int(g.ids[b])})
        assert r.status_code == 200
        _wait(lambda: two.stream.stats.new_edges >= 1 and one.stream.stats.new_edges >= 1)
        want, _ = _expected(one, [(a, b)])
        for svc in (one, two):
            np.testing.assert_allclose(svc.model.embeddings[[a, b]], want[[a, b]], rtol=1e-4, atol=1e-5)
    finally:
        one.close()
        two.close()
        import redis

        redis.Redis.from_url(redis_server.url).delete(f"pymk:stream:{one.model.version}:edges")


def test_edges_posted_while_redis_is_down_are_kept_and_logged_when_it_returns(gnn_model, tmp_path):
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path)
    try:
        res = CliRunner().invoke(app, ["publish", "--model", str(gnn_model), "--redis", server.url])
        assert res.exit_code == 0, res.output
        svc = Service.from_settings(ServeSettings(model=str(gnn_model), redis_url=server.url, stream_block_ms=20,
                                                  redis_retry_s=0.0))
        c = TestClient(create_app(svc))
        g = svc.model.graph
        deg = np.asarray(g.degree)
        quiet = [int(u) for u in np.argsort(deg, kind="stable")[:40]]
        pairs = [(a, b) for a in quiet for b in quiet if a < b and b not in set(g.neighbors(a).tolist())][:2]
        server.stop(kill=True)
        r = c.post("/v1/edges", json={"src": int(g.ids[pairs[0][0]]), "dst": int(g.ids[pairs[0][1]])})
        assert r.status_code == 200 and r.json()["degraded"]
        server.start()
        r = c.post("/v1/edges", json={"src": int(g.ids[pairs[1][0]]), "dst": int(g.ids[pairs[1][1]])})
        assert r.status_code == 200
        _wait(lambda: svc.stream.stats.new_edges == 2, timeout=20)
        want, _ = _expected(svc, pairs)
        ends = np.unique(np.array(pairs))
        np.testing.assert_allclose(svc.model.embeddings[ends], want[ends], rtol=1e-4, atol=1e-5)
        svc.close()
    finally:
        if server.proc.poll() is None:
            server.stop()


def test_a_new_user_gets_an_inductive_embedding_in_the_ann_index(gnn_model, tmp_path):
    settings = ServeSettings(model=str(gnn_model), stream_log=str(tmp_path / "events.log"), stream_block_ms=20)
    svc = Service.from_settings(settings)
    try:
        c = TestClient(create_app(svc))
        g = svc.model.graph
        friends = [int(u) for u in g.ids[:4]]
        for f in friends:
            assert c.post("/v1/edges", json={"src": 77_777_777, "dst": f}).status_code == 200
        u = int(g.index_of([77_777_777])[0])
        assert u >= svc.model.snapshot.num_users
        st1 = svc.model.stage1
        assert st1.has_embedding(np.array([u]))[0] and svc.model.ann.contains([u])[0]
        live = np.asarray(svc.model.embeddings)
        want = live[g.index_of(friends)].mean(axis=0)  # the centroid of its friends' current embeddings
        np.testing.assert_allclose(st1.embeddings[[u]][0], want, rtol=1e-5, atol=1e-6)
        r = c.get("/v1/users/77777777/recommendations").json()
        assert "embedding" not in r["degraded_sources"] and r["recommendations"]
        # the index holds its vector: searching with it scores the user at |v|^2
        sc, got = svc.model.ann.search(want[None, :], svc.model.ann.ntotal)
        at = got[0].tolist().index(u)
        assert abs(float(sc[0, at]) - float(want @ want)) < 1e-3 * max(1.0, float(want @ want))
        assert c.delete("/v1/users/77777777").status_code == 200
        assert not svc.model.ann.contains([u])[0] and not st1.has_embedding(np.array([u]))[0]
    finally:
        svc.close()
