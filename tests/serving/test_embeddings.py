"""Tiered embeddings: int8 quantisation, the hot tier in a real Redis, the cold tier in RocksDB."""

import json
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pymk.serving.embeddings import (
    TieredEmbeddings,
    dequantize_int8,
    hot_users,
    pack,
    publish_hot,
    quantize_int8,
    unpack,
    write_cold,
)
from pymk.serving.metrics import Metrics
from pymk.serving.redis_link import RedisLink
from tests.helpers import graph_from_pairs
from tests.redis_server import RedisServer


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 20), st.integers(1, 64)),
              elements=st.floats(-1e3, 1e3, width=32)))
def test_int8_error_is_at_most_half_a_step(emb):
    q, scale = quantize_int8(emb)
    back = dequantize_int8(q, scale)
    assert np.all(np.abs(back - emb) <= scale[:, None] * 0.5 + 1e-6 * np.abs(emb))
    np.testing.assert_array_equal(unpack(pack(emb), emb.shape[1]), back)
    assert len(pack(emb)[0]) == emb.shape[1] + 4


def test_tiers_answer_in_order_hot_cold_mmap_and_survive_redis_dying(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 300, 16
    emb = rng.normal(size=(n, d)).astype(np.float32)
    g = graph_from_pairs([(0, j) for j in range(1, 40)] + [(1, j) for j in range(2, 20)] + [(5, 6)], n)
    hot = hot_users(g, 2)
    assert hot.tolist() == [0, 1]  # the highest degrees
    write_cold(tmp_path / "cold", emb[:200])  # users >= 200 joined after the cold tier was written
    server = RedisServer(tmp_path)
    try:
        link = RedisLink.from_url(server.url, timeout_ms=200, retry_s=60)
        publish_hot(link.client, "v1", emb, hot)
        metrics = Metrics()
        t = TieredEmbeddings(emb, link=link, version="v1", cold_path=tmp_path / "cold", metrics=metrics)
        users = np.array([0, 150, 1, 250, 7])
        got = t[users]
        ref = dequantize_int8(*quantize_int8(emb[users]))
        np.testing.assert_allclose(got[[0, 1, 2, 4]], ref[[0, 1, 2, 4]])  # int8 from the tiers
        np.testing.assert_array_equal(got[3], emb[250])  # in neither tier: the float32 matrix
        assert t.counts == {"hot": 2, "cold": 2, "mmap": 1, "cold_error": 0}
        assert 'pymk_embedding_lookups_total{tier="hot"} 2.0' in metrics.render().decode()
        assert t.shape == (n, d)
        server.stop(kill=True)
        again = t[users]  # Redis gone: the cold tier answers what the hot one did
        np.testing.assert_allclose(again, got)
        assert t.counts == {"hot": 2, "cold": 6, "mmap": 2, "cold_error": 0}
        t.close()
    finally:
        if server.proc.poll() is None:
            server.stop()


@pytest.mark.parametrize("d", [16, 128])
def test_int8_queries_keep_exact_top_k(d):
    """Int8 query vectors against float32 items: the top-20 by inner product barely changes."""
    rng = np.random.default_rng(1)
    items = rng.normal(size=(2000, d)).astype(np.float32)
    queries = items[:100]
    deq = dequantize_int8(*quantize_int8(queries))
    top = np.argsort(-(queries @ items.T), axis=1)[:, :20]
    top_q = np.argsort(-(deq @ items.T), axis=1)[:, :20]
    overlap = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(top, top_q, strict=True)])
    assert overlap >= 0.95


def test_publish_hot_users_then_serve_through_the_tiers(tmp_path, redis_server):
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from pymk.cli import app
    from pymk.graph.synth import SynthConfig, generate, write_edges
    from pymk.serving.app import create_app
    from pymk.serving.service import Service
    from pymk.serving.settings import ServeSettings

    runner = CliRunner()
    edges = write_edges(tmp_path / "e.csv", *generate(SynthConfig(400, 8, seed=5)))
    cfg = tmp_path / "gnn.toml"
    cfg.write_text('[gnn]\nenabled = true\nepochs = 1\ndim = 16\n[candidates.ann]\nkind = "hnsw"\n')
    out = tmp_path / "m"
    assert runner.invoke(app, ["build", "--edges", str(edges), "--out", str(out), "--config", str(cfg)]).exit_code == 0
    res = runner.invoke(app, ["publish", "--model", str(out), "--redis", redis_server.url, "--hot-users", "40"])
    assert res.exit_code == 0, res.output
    assert "40 users hot" in res.output and "20 bytes a user" in res.output
    svc = Service.from_settings(ServeSettings(model=str(out), redis_url=redis_server.url))
    assert svc.embeddings is not None
    c = TestClient(create_app(svc))
    hub = int(svc.model.graph.ids[hot_users(svc.model.graph, 1)[0]])
    quiet = int(svc.model.graph.ids[np.argsort(svc.model.graph.degree, kind="stable")[0]])
    for user in (hub, quiet):
        body = c.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
        assert len(body["recommendations"]) == 10 and "embedding" not in body["degraded_sources"]
    assert svc.embeddings.counts["hot"] >= 1 and svc.embeddings.counts["cold"] >= 1
    assert 'tier="cold"' in c.get("/metrics").text
    # a cold tier written for another model version is not used
    import json

    meta = out / "serving" / "emb_cold.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "model_version": "other"}))
    svc2 = Service.from_settings(ServeSettings(model=str(out), redis_url=redis_server.url))
    assert svc2.embeddings.cold is None


def _write_cold_within(limit_bytes: int, path, emb_path) -> subprocess.CompletedProcess:
    """`write_cold` in a child process whose files may not grow past `limit_bytes` (RLIMIT_FSIZE, SIGXFSZ
    ignored: a write past it fails with EFBIG, as on a full disk)."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    code = ("import sys, numpy as np; from pymk.serving.embeddings import write_cold, ColdTierError\n"
            "try:\n    write_cold(__import__('pathlib').Path(sys.argv[1]), np.load(sys.argv[2]), version='v2')\n"
            "except ColdTierError as e:\n    print(e); sys.exit(3)\n")
    return subprocess.run([sys.executable, "-c", code, str(path), str(emb_path)], capture_output=True, text=True,
                          preexec_fn=limit)


def test_a_cold_tier_write_that_runs_out_of_disk_leaves_the_tier_in_place(tmp_path):
    rng = np.random.default_rng(1)
    old = rng.normal(size=(500, 32)).astype(np.float32)
    write_cold(tmp_path / "cold", old, version="v1")
    new = rng.normal(size=(20_000, 32)).astype(np.float32)
    np.save(tmp_path / "new.npy", new)
    res = _write_cold_within(64 * 1024, tmp_path / "cold", tmp_path / "new.npy")  # 20K x 36 bytes do not fit
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"cold embedding tier at {tmp_path / 'cold'} failed" in res.stdout and "disk full" in res.stdout
    assert json.loads((tmp_path / "cold.json").read_text())["model_version"] == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cold", "cold.json", "new.npy"]  # no half tier left
    t = TieredEmbeddings(old, cold_path=tmp_path / "cold")
    np.testing.assert_allclose(t[np.arange(500)], dequantize_int8(*quantize_int8(old)))  # the old tier, whole
    assert t.counts["cold"] == 500
    t.close()
    assert _write_cold_within(2**40, tmp_path / "cold", tmp_path / "new.npy").returncode == 0  # room: replaced
    assert json.loads((tmp_path / "cold.json").read_text())["model_version"] == "v2"


def test_an_unreadable_cold_tier_falls_back_to_the_matrix(tmp_path, caplog):
    """A cold tier whose files go bad under a running service: lookups answer from the float32 matrix,
    counted as `cold_error`, logged once; nothing raises into the request."""
    import logging

    rng = np.random.default_rng(2)
    emb = rng.normal(size=(3000, 16)).astype(np.float32)
    write_cold(tmp_path / "cold", emb)
    t = TieredEmbeddings(emb, cold_path=tmp_path / "cold")
    for sst in (tmp_path / "cold").glob("*.sst"):
        data = bytearray(sst.read_bytes())
        data[: len(data) // 2] = bytes(len(data) // 2)  # the blocks zeroed: every checksum fails
        sst.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, "pymk.serving"):
        got = t[np.arange(0, 3000, 7)]
        again = t[np.arange(1, 3000, 7)]
    np.testing.assert_array_equal(got, emb[np.arange(0, 3000, 7)])
    np.testing.assert_array_equal(again, emb[np.arange(1, 3000, 7)])
    assert t.counts["cold"] == 0 and t.counts["cold_error"] == got.shape[0] + again.shape[0]
    assert caplog.text.count("cold embedding tier unreadable") == 1
    t.close()
