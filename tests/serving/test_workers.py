"""`pymk serve --workers 2` as a real process tree: /metrics sums every worker's counts, whichever answers."""

import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import build_learned_model
from tests.redis_server import _free_port

MIN_REQUESTS = 20


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_learned_model(tmp_path_factory.mktemp("w") / "m", users=300)


def _get(url: str) -> tuple[int, str]:
    """GET on a new connection (urllib opens one per request, so the kernel spreads them over workers)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _requests(families) -> float:
    """Recommendation requests counted in Prometheus metric families, over all label values."""
    return sum(s.value for m in families for s in m.samples
               if s.name == "pymk_request_seconds_count" and s.labels.get("endpoint") == "recommendations")


def _served_by_worker(metrics_dir: Path) -> dict[str, float]:
    """pid -> recommendation requests that worker counted, read from its own file."""
    return {f.stem.rsplit("_", 1)[-1]: _requests(MultiProcessCollector.merge([str(f)]))
            for f in metrics_dir.glob("histogram_*.db")}


def test_metrics_sum_over_workers(model_dir, tmp_path):
    port = _free_port()
    log = open(tmp_path / "serve.log", "w+")
    cmd = [str(Path(sys.executable).parent / "pymk"), "serve", "--model", str(model_dir), "--port", str(port),
           "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # both workers load the model
            try:
                if _get(f"{base}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        log.flush()
        metrics_dir = Path(re.search(r"summed through (\S+)", (tmp_path / "serve.log").read_text()).group(1))
        sent, served = 0, {}
        while sent < MIN_REQUESTS or (sum(v > 0 for v in served.values()) < 2 and sent < 500):
            assert _get(f"{base}/v1/users/{sent % 300}/recommendations?k=5")[0] == 200
            sent += 1
            served = _served_by_worker(metrics_dir)
        assert len(served) == 2 and all(v > 0 for v in served.values()), served  # both workers served some
        assert sum(served.values()) == sent
        scrapes = [_requests(text_string_to_metric_families(_get(f"{base}/metrics")[1])) for _ in range(6)]
        # every scrape, whichever worker answers it, counts all the requests of both workers
        assert scrapes == [sent] * 6, (scrapes, served)
        # a friendship posted to whichever worker answers is applied by both (they tail one edge log)
        post = urllib.request.Request(f"{base}/v1/edges", data=b'{"src": 3, "dst": 297}',
                                      headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(post, timeout=10) as r:
            assert r.status == 200
        applied = 0
        for _ in range(200):
            applied = sum(smp.value for m in text_string_to_metric_families(_get(f"{base}/metrics")[1])
                          for smp in m.samples if smp.name == "pymk_stream_events_total")
            if applied == 2:
                break
            time.sleep(0.05)
        assert applied == 2
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert not metrics_dir.exists()  # the directory `pymk serve` made for itself is gone


def _start(cmd, logpath):
    log = open(logpath, "w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    return proc, log


def _wait_ready(proc, base, logpath):
    for _ in range(600):
        try:
            if _get(f"{base}/readyz")[0] == 200:
                return
        except OSError:
            pass
        assert proc.poll() is None, Path(logpath).read_text()
        time.sleep(0.1)
    raise AssertionError("service did not become ready")


def _stream_counter(base, name) -> float:
    return sum(s.value for m in text_string_to_metric_families(_get(f"{base}/metrics")[1]) for s in m.samples
               if s.name == name)


def test_erasure_across_two_serve_processes_with_redis_and_a_restart(model_dir, redis_server, tmp_path):
    """DELETE /v1/users/{id} posted to one of two `pymk serve` worker processes sharing Redis: from then on,
    in both workers and after a restart, the id is in no answer, its own answer is 404, and Redis holds no
    key of it."""
    import json

    import redis

    from pymk.pipeline.model import Model

    redis.Redis.from_url(redis_server.url).flushall()  # this test's own instance: only this model's keys from here
    res = subprocess.run([str(Path(sys.executable).parent / "pymk"), "publish", "--model", str(model_dir),
                          "--redis", redis_server.url], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    g = Model.load(model_dir).graph
    victim = int(g.ids[int(g.degree.argmax())])  # the best-connected user: in many lists
    port = _free_port()
    cmd = [str(Path(sys.executable).parent / "pymk"), "serve", "--model", str(model_dir), "--port", str(port),
           "--workers", "2", "--redis", redis_server.url]
    base = f"http://127.0.0.1:{port}"
    proc, log = _start(cmd, tmp_path / "serve.log")
    users = [int(u) for u in g.ids.tolist() if u != victim]
    try:
        _wait_ready(proc, base, tmp_path / "serve.log")
        seen = sum(victim in [r["user_id"] for r in json.loads(_get(f"{base}/v1/users/{u}/recommendations")[1])
                              ["recommendations"]] for u in users[:100])
        assert seen > 0  # it was recommended (and cached in Redis) before
        assert _get(f"{base}/v1/users/{victim}/recommendations")[0] == 200
        req = urllib.request.Request(f"{base}/v1/users/{victim}", method="DELETE")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        for _ in range(400):  # both workers applied the erasure from the shared stream
            if _stream_counter(base, "pymk_stream_events_total") == 2:
                break
            time.sleep(0.05)
        assert _stream_counter(base, "pymk_stream_events_total") == 2

        def check_nowhere():
            assert _get(f"{base}/v1/users/{victim}/recommendations")[0] == 404
            for u in users:
                status, body = _get(f"{base}/v1/users/{u}/recommendations?k=50")
                assert status == 200
                for rec in json.loads(body)["recommendations"]:
                    assert rec["user_id"] != victim and victim not in rec["mutual_sample"], u

        check_nowhere()
        client = redis.Redis.from_url(redis_server.url)
        named = [k for k in client.scan_iter(f"*:{victim}") if not k.startswith(b"pymk:stream:")]
        assert named == [], named  # cached list, action sets, token: gone
        idx = int(np.flatnonzero(g.ids == victim)[0])
        assert not client.exists(*[k for k in client.scan_iter(f"pymk:features:*:u:{idx}")] or ["-"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    proc, log = _start(cmd, tmp_path / "serve2.log")  # restarted workers replay the stream
    try:
        _wait_ready(proc, base, tmp_path / "serve2.log")
        check_nowhere()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_publish_swaps_both_workers_with_redis_and_loses_no_posted_friendship(model_dir, redis_server, tmp_path):
    """Two `pymk serve` workers sharing Redis; friendships posted before `pymk update`'s cut, while it runs and
    after `pymk publish` swapped both workers to N+1: every one is in both workers' graph (counted against
    networkx)."""
    import json
    import os
    import shutil

    import networkx as nx
    import redis

    from pymk.pipeline.model import Model

    redis.Redis.from_url(redis_server.url).flushall()  # the stream of this lineage: no earlier test's events
    n0 = tmp_path / "n0"
    shutil.copytree(model_dir, n0, ignore=shutil.ignore_patterns("stream"))
    pymk = str(Path(sys.executable).parent / "pymk")
    res = subprocess.run([pymk, "publish", "--model", str(n0), "--redis", redis_server.url], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    g0 = Model.load(n0).graph
    ref = nx.Graph()
    ref.add_edges_from(zip(*(np.asarray(g0.ids)[x].tolist() for x in g0.edge_pairs()), strict=True))
    rng = np.random.default_rng(9)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"

    def post_some(n):
        for _ in range(n):
            a, b = rng.choice(300, 2, replace=False).tolist()
            req = urllib.request.Request(f"{base}/v1/edges", data=json.dumps({"src": a, "dst": b}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 200 and not json.loads(r.read())["degraded"]
            ref.add_edge(a, b)

    answers = []

    def all_answer(version, edges, tries=20):
        answers[:] = [json.loads(_get(f"{base}/healthz")[1]) for _ in range(tries)]
        return all(h["model_version"] == version and h["edges"] == edges for h in answers)

    cmd = [pymk, "serve", "--model", str(n0), "--port", str(port), "--workers", "2", "--redis", redis_server.url]
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYMK_PUBLISH_POLL_S": "0.1"})
    try:
        _wait_ready(proc, base, tmp_path / "serve.log")
        post_some(10)
        res = subprocess.run([pymk, "update", "--model", str(n0), "--events", redis_server.url, "--out",
                              str(tmp_path / "n1")], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        post_some(10)  # after N+1's cut
        res = subprocess.run([pymk, "publish", "--model", str(tmp_path / "n1"), "--redis", redis_server.url],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        deadline = time.monotonic() + 120
        while _stream_counter(base, "pymk_model_swaps_total") < 2:  # one swap per worker, summed over both
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        v1 = Model.load(tmp_path / "n1").version
        assert all_answer(v1, ref.number_of_edges()), (v1, ref.number_of_edges(), answers)
        post_some(5)  # to N+1: whichever worker took it, both apply it
        deadline = time.monotonic() + 60
        while not all_answer(v1, ref.number_of_edges()):
            assert time.monotonic() < deadline, "a friendship posted after the swap did not reach both workers"
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
