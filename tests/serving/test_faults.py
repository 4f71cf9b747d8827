"""Faults with real processes (issue 18, item 5): Redis killed, restarted from its AOF and paused under a mixed
read/write load on two `pymk serve` processes; a serving process SIGKILLed while it applies the event log.

Afterwards every friendship and block answered 200 (degraded or not) is applied in both processes, counted
against a networkx reference, and no request got a 5xx.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import threading
import time

import networkx as nx
import numpy as np
import pytest
import redis

from pymk.pipeline.model import Model
from tests.helpers import build_learned_model
from tests.redis_server import RedisServer
from tests.serving.processes import PYMK, ServeProcess, call


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_learned_model(tmp_path_factory.mktemp("faults") / "m", users=300)


def _fresh_model(model_dir, tmp_path, url):
    """A copy of the model published to this test's Redis, and its graph as networkx (external ids)."""
    m = tmp_path / "m"
    shutil.copytree(model_dir, m, ignore=shutil.ignore_patterns("stream"))
    res = subprocess.run([PYMK, "publish", "--model", str(m), "--redis", url], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    g = Model.load(m).graph
    ref = nx.Graph()
    ref.add_nodes_from(g.ids.tolist())
    ref.add_edges_from(zip(*(np.asarray(g.ids)[x].tolist() for x in g.edge_pairs()), strict=True))
    return m, ref


class Load:
    """Client threads sending a mix of 90% reads and 10% writes (friendships, blocks) to the services until
    stopped; records every status and what was acknowledged."""

    def __init__(self, services, users, threads=3, seed=0):
        self.services, self.users = services, users
        self.friendships: set[tuple[int, int]] = set()
        self.blocks: set[tuple[int, int]] = set()
        self.statuses: dict[int, int] = {}
        self.degraded_writes = 0
        self.errors: list = []
        self.done = 0
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(seed + i,), daemon=True) for i in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self, seed):
        rng = random.Random(seed)
        while not self._stop.is_set():
            svc = rng.choice(self.services)
            a, b = rng.sample(self.users, 2)
            roll = rng.random()
            try:
                if roll < 0.07:
                    status, body = call("POST", f"{svc.base}/v1/edges", {"src": a, "dst": b})
                    kind = "friend"
                elif roll < 0.10:
                    status, body = call("POST", f"{svc.base}/v1/users/{a}/blocks", {"blocked_id": b})
                    kind = "block"
                else:
                    status, body = call("GET", f"{svc.base}/v1/users/{a}/recommendations?k=20")
                    kind = "read"
            except OSError as exc:  # the service itself must stay up: a refused connection is a failure
                self.errors.append(repr(exc))
                status, body, kind = 0, {}, "error"
            with self._cv:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if status == 200 and kind == "friend":
                    self.friendships.add((a, b))
                elif status == 200 and kind == "block":
                    self.blocks.add((a, b))
                if status == 200 and kind != "read" and body.get("degraded"):
                    self.degraded_writes += 1
                self.done += 1
                self._cv.notify_all()

    def wait_for(self, more: int) -> None:
        """Blocks until `more` further requests were answered."""
        with self._cv:
            target = self.done + more
            assert self._cv.wait_for(lambda: self.done >= target, timeout=300), (self.done, target)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


def _all_applied(services, ref, load, deadline_s=120):
    """Waits until every service holds every acknowledged friendship; returns the edge counts seen."""
    want = ref.number_of_edges()
    deadline = time.monotonic() + deadline_s
    while True:
        edges = [s.health()["edges"] for s in services]
        if edges == [want] * len(services) or time.monotonic() > deadline:
            return edges, want
        time.sleep(0.1)  # polling the services' own report


def _check_blocks(services, blocks):
    for a, b in sorted(blocks)[:40]:
        for s in services:
            for x, y in ((a, b), (b, a)):
                status, body = call("GET", f"{s.base}/v1/users/{x}/recommendations?k=100")
                assert status == 200 and y not in {r["user_id"] for r in body["recommendations"]}, (x, y)


def test_redis_killed_restarted_from_aof_and_paused_under_load_loses_nothing(model_dir, tmp_path):
    server = RedisServer(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    m, ref = _fresh_model(model_dir, tmp_path, server.url)
    services = [ServeProcess(["--model", str(m), "--redis", server.url], tmp_path / f"serve{i}.log")
                for i in range(2)]
    load = Load(services, sorted(ref.nodes))
    try:
        load.wait_for(150)
        server.stop(kill=True)  # SIGKILL: what the AOF holds is what Redis acknowledged
        load.wait_for(150)  # served degraded meanwhile
        server.start()
        load.wait_for(150)
        redis.Redis.from_url(server.url).execute_command("CLIENT", "PAUSE", "1500", "ALL")
        load.wait_for(150)
    finally:
        load.stop()
    try:
        ref.add_edges_from(load.friendships)
        edges, want = _all_applied(services, ref, load)
        assert edges == [want, want], (edges, want, len(load.friendships), load.degraded_writes)
        assert not load.errors, load.errors[:5]
        assert set(load.statuses) == {200}, load.statuses  # no 5xx (and no other refusal) during the faults
        assert load.degraded_writes > 0  # the faults were felt: writes acknowledged while Redis was away
        _check_blocks(services, load.blocks)
    finally:
        for s in services:
            s.stop()
        server.stop()


def test_a_service_killed_while_it_applies_the_log_catches_up_on_restart(model_dir, tmp_path):
    server = RedisServer(tmp_path)
    m, ref = _fresh_model(model_dir, tmp_path, server.url)
    a, b = (ServeProcess(["--model", str(m), "--redis", server.url], tmp_path / f"serve{i}.log") for i in range(2))
    load = Load([a], sorted(ref.nodes))  # every write through a; b only applies them from the log
    try:
        load.wait_for(200)
        b.kill()  # SIGKILL mid-stream
        load.wait_for(200)
        b.start()  # replays the log from its snapshot
        load.wait_for(100)
    finally:
        load.stop()
    try:
        ref.add_edges_from(load.friendships)
        edges, want = _all_applied([a, b], ref, load)
        assert edges == [want, want], (edges, want, len(load.friendships))
        assert set(load.statuses) == {200} and not load.errors, (load.statuses, load.errors[:5])
        _check_blocks([a, b], load.blocks)
    finally:
        a.stop()
        b.stop()
        server.stop()


def test_a_change_acknowledged_while_redis_was_down_reaches_both_with_nothing_posted_after(model_dir, tmp_path):
    """The change waits in the worker that took it; once Redis answers again that worker's stream loop logs
    it (no later post needed to carry it), and both services apply it."""
    server = RedisServer(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    m, ref = _fresh_model(model_dir, tmp_path, server.url)
    a, b = (ServeProcess(["--model", str(m), "--redis", server.url], tmp_path / f"serve{i}.log") for i in range(2))
    try:
        x, y = next((u, v) for u in sorted(ref.nodes) for v in sorted(ref.nodes) if u < v and not ref.has_edge(u, v))
        server.stop(kill=True)
        status, body = call("POST", f"{a.base}/v1/edges", {"src": x, "dst": y})
        assert status == 200 and body["degraded"], body
        server.start()
        ref.add_edge(x, y)
        edges, want = _all_applied([a, b], ref, None)
        assert edges == [want, want], (edges, want)
    finally:
        a.stop()
        b.stop()
        server.stop()
