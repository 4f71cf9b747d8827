"""`pymk publish` swaps a running service to the next version: changes posted before the update's cut, while
it was built and after the swap are all served by the new version (checked against networkx replaying every
acknowledged change on the first version's graph); a rollback is the same path; a version that would lose
changes is refused and the running one keeps serving."""

import json
import shutil
import time
import weakref

import networkx as nx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from pymk.cli import app as cli
from pymk.graph.snapshot import CSRGraph
from pymk.pipeline.lineage import Pointer
from pymk.pipeline.model import Model
from pymk.pipeline.update import update
from pymk.serving.app import create_app
from pymk.serving.settings import ServeSettings
from tests.helpers import build_learned_model

runner = CliRunner()
USERS = 300


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_learned_model(tmp_path_factory.mktemp("pub") / "n", users=USERS)


def _wait(cond, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


class Ledger:
    """Every change the service acknowledged, replayed on networkx (the reference)."""

    def __init__(self, graph: CSRGraph):
        self.g = nx.Graph()
        ids = np.asarray(graph.ids)
        lo, hi = graph.edge_pairs()
        self.g.add_nodes_from(ids.tolist())
        self.g.add_edges_from(zip(ids[lo].tolist(), ids[hi].tolist(), strict=True))
        self.erased: list[int] = []
        self.apart: list[tuple[int, int]] = []  # blocked or unfriended: neither recommended to the other

    def post(self, c, op: str, a: int, b: int = -1) -> None:
        if op == "add":
            r = c.post("/v1/edges", json={"src": a, "dst": b})
            self.g.add_edge(a, b)
        elif op == "remove":
            r = c.delete(f"/v1/users/{a}/friends/{b}")
            self.apart.append((a, b))
            if self.g.has_edge(a, b):
                self.g.remove_edge(a, b)
        elif op == "block":
            r = c.post(f"/v1/users/{a}/blocks", json={"blocked_id": b})
            self.apart.append((a, b))
        else:
            r = c.delete(f"/v1/users/{a}")
            self.g.remove_node(a)
            self.erased.append(a)
        assert r.status_code == 200 and not r.json()["degraded"], r.text

    def day(self, c, rng, day: int) -> None:
        nodes = sorted(n for n in self.g.nodes if n < USERS)
        for _ in range(15):
            a, b = rng.choice(nodes, 2, replace=False).tolist()
            self.post(c, "add", a, b)
        self.post(c, "add", 10_000 + day, int(rng.choice(nodes)))  # someone joins
        self.post(c, "add", 10_000 + day, int(rng.choice(nodes)))
        for a, b in list(self.g.edges(int(rng.choice(nodes))))[:2]:
            self.post(c, "remove", a, b)
        a, b = rng.choice(nodes, 2, replace=False).tolist()
        self.post(c, "block", a, b)
        self.post(c, "erase", int(rng.choice(nodes)))

    def pairs(self) -> set[tuple[int, int]]:
        return {(min(a, b), max(a, b)) for a, b in self.g.edges()}


def _served_pairs(svc) -> set[tuple[int, int]]:
    g = svc.model.graph.to_graph()
    lo, hi = g.edge_pairs()
    ids = np.asarray(g.ids)
    return {(min(a, b), max(a, b)) for a, b in zip(ids[lo].tolist(), ids[hi].tolist(), strict=True)}


def _swaps(c, result: str) -> float:
    fams = text_string_to_metric_families(c.get("/metrics").text)
    return sum(s.value for f in fams for s in f.samples
               if s.name == "pymk_model_swaps_total" and s.labels.get("result") == result)


def _publish(model_dir) -> None:
    res = runner.invoke(cli, ["publish", "--model", str(model_dir)])
    assert res.exit_code == 0, res.output


def test_publish_swaps_the_running_service_and_loses_nothing(built, tmp_path):
    n0 = tmp_path / "n0"
    shutil.copytree(built, n0)
    ledger = Ledger(CSRGraph.load(n0 / "graph"))
    rng = np.random.default_rng(4)
    app = create_app(settings=ServeSettings(model=str(n0), publish_poll_s=0.05, stream_block_ms=20))
    with TestClient(app) as c:
        v0 = c.get("/healthz").json()["model_version"]
        first = weakref.ref(app.state.service)
        ledger.day(c, rng, 1)
        n1 = update(n0, n0 / "stream" / "events.log", tmp_path / "n1", log=lambda s: None)  # the nightly job
        ledger.day(c, rng, 2)  # posted while N+1 was built: after its cut
        v1 = Model.load(n1).version
        _publish(n1)
        _wait(lambda: c.get("/healthz").json()["model_version"] == v1, "the service did not swap to N+1")
        svc = app.state.service
        assert svc.model.path == n1 and _swaps(c, "ok") == 1
        # N is gone from memory (the swap collects it once N is closed): a nightly publish does not grow the worker
        _wait(lambda: first() is None, "version N was not freed after the swap")
        assert _served_pairs(svc) == ledger.pairs()  # day 1 from N+1's snapshot, day 2 replayed from the log
        ledger.day(c, rng, 3)  # posted to N+1
        gone = next(iter(ledger.erased))  # erased before N+1's cut: not recreated by a friendship naming it
        r = c.post("/v1/edges", json={"src": gone, "dst": 1})
        assert r.status_code == 404 and app.state.service.model.index_of([gone])[0] == -1
        assert _served_pairs(app.state.service) == ledger.pairs()
        for a, b in ledger.apart:  # blocks and unfriendings posted to N still hold in N+1, both ways
            for u, v in ((a, b), (b, a)):
                r = c.get(f"/v1/users/{u}/recommendations?k=300")
                if r.status_code == 200:  # (one of them may have been erased since)
                    assert v not in {x["user_id"] for x in r.json()["recommendations"]}

        _publish(n0)  # rollback: N replays the whole log on its own snapshot
        _wait(lambda: c.get("/healthz").json()["model_version"] == v0, "the service did not swap back to N")
        assert _served_pairs(app.state.service) == ledger.pairs() and _swaps(c, "ok") == 2


def test_a_version_that_would_lose_changes_is_refused(built, tmp_path):
    n0 = tmp_path / "n0"
    shutil.copytree(built, n0)
    elsewhere = tmp_path / "copy.log"
    app = create_app(settings=ServeSettings(model=str(n0), publish_poll_s=0.05, stream_block_ms=20))
    with TestClient(app) as c:
        v0 = c.get("/healthz").json()["model_version"]
        assert c.post("/v1/edges", json={"src": 1, "dst": 250}).status_code == 200
        shutil.copy(n0 / "stream" / "events.log", elsewhere)  # a copy: what is posted from now on is not in it
        n1 = update(n0, elsewhere, tmp_path / "n1", log=lambda s: None)
        res = runner.invoke(cli, ["publish", "--model", str(n1)])  # its pointer is beside the log it follows
        assert res.exit_code == 0 and str(tmp_path / "published.json") in res.output
        # named in the pointer this service reads (by hand): refused, since the changes posted here since the
        # copy are not in the log N+1 follows
        Pointer.of_model(n0, json.loads((n0 / "model.json").read_text())).write(
            n1, json.loads((n1 / "model.json").read_text()))
        _wait(lambda: _swaps(c, "failed") == 1, "the swap was not refused")
        assert c.get("/healthz").json()["model_version"] == v0  # N keeps serving
        assert c.post("/v1/edges", json={"src": 2, "dst": 251}).status_code == 200
        assert app.state.service.model.graph.has_edge(*app.state.service.model.index_of([2, 251]).tolist())
