"""`pymk publish` swaps a running Ray ranking tier (`pymk serve --executor ray`) to the next version: it starts
N+1's shard servers beside N's, replays the event log from N+1's cut into them, swaps, and stops N's servers.
Every friendship acknowledged before the cut, while N+1 was built and after the swap is in N+1's servers'
lists (checked against networkx replaying every acknowledged change on the first version's graph)."""

import time

import networkx as nx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from pymk.cli import app as cli
from pymk.graph.snapshot import CSRGraph
from pymk.pipeline.update import update
from pymk.serving.app import create_app
from pymk.serving.settings import ServeSettings
from tests.helpers import build_synth_model

ray = pytest.importorskip("ray")

runner = CliRunner()
USERS, SHARDS = 300, 2


@pytest.fixture(scope="module")
def n0(tmp_path_factory):
    return build_synth_model(tmp_path_factory.mktemp("tierswap") / "n0", users=USERS, degree=8, seed=4, shards=SHARDS)


@pytest.fixture(scope="module")
def one_node():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)  # room for both versions' servers
    try:
        yield
    finally:
        ray.shutdown()


def _served_pairs(svc) -> set[tuple[int, int]]:
    """Every friendship the tier's shard servers hold now, as external id pairs."""
    m = svc.model
    users, ptr, idx = m.servers.fetch(np.arange(m.graph.num_users))
    ids = np.asarray(m.graph.ids)
    src = np.repeat(users, np.diff(ptr))
    return {(min(a, b), max(a, b)) for a, b in zip(ids[src].tolist(), ids[idx].tolist(), strict=True)}


def test_publish_swaps_a_ray_ranking_tier_and_loses_nothing(n0, one_node, tmp_path):
    swap_and_check(n0, tmp_path)


def swap_and_check(n0, tmp_path) -> set:
    """Serves N0 as a Ray tier on the Ray this process is connected to; posts friendships before the cut,
    during the update and after the swap; checks N+1's servers hold them all (networkx) and N's are gone.
    Returns the Ray nodes N+1's servers run on."""
    g0 = CSRGraph.load(n0 / "graph")
    ids = np.asarray(g0.ids)
    lo, hi = g0.edge_pairs()
    ref = nx.Graph(zip(ids[lo].tolist(), ids[hi].tolist(), strict=True))
    rng = np.random.default_rng(0)

    def post(c, a, b):
        r = c.post("/v1/edges", json={"src": a, "dst": b})
        assert r.status_code == 200 and not r.json()["degraded"], r.text
        ref.add_edge(a, b)

    settings = ServeSettings(model=str(n0), executor="ray", publish_poll_s=0.05, stream_block_ms=20, cache_size=0)
    app = create_app(settings=settings)
    with TestClient(app) as c:
        v0 = c.get("/healthz").json()["model_version"]
        old = app.state.service.model.servers
        for _ in range(10):  # before the cut
            post(c, *(int(x) for x in rng.choice(USERS, 2, replace=False)))
        post(c, 5000, 7)  # someone joins
        n1 = update(n0, n0 / "stream" / "events.log", tmp_path / "n1", log=lambda s: None)
        assert (n1 / "graph" / "shards").is_dir()
        for _ in range(10):  # after the cut, before the swap: replayed into N+1's servers
            post(c, *(int(x) for x in rng.choice(USERS, 2, replace=False)))
        res = runner.invoke(cli, ["publish", "--model", str(n1)])
        assert res.exit_code == 0, res.output
        deadline = time.monotonic() + 300
        while c.get("/healthz").json()["model_version"] == v0:
            assert time.monotonic() < deadline, "the tier did not swap"
            time.sleep(0.05)
        svc = app.state.service
        assert svc.model.tier and svc.model.servers is not old
        for _ in range(5):  # after the swap
            post(c, *(int(x) for x in rng.choice(USERS, 2, replace=False)))
        post(c, 5001, 5000)
        assert _served_pairs(svc) == {(min(a, b), max(a, b)) for a, b in ref.edges()}
        r = c.get("/v1/users/5001/recommendations")
        assert r.status_code == 200 and 7 in [x["user_id"] for x in r.json()["recommendations"]]
        with pytest.raises(ray.exceptions.RayActorError):  # N's servers stopped
            ray.get(old.servers[0].ping.remote(), timeout=30)
        return {st["node"] for st in svc.model.servers.server_stats()}


def test_a_swap_the_cluster_has_no_room_for_is_refused_at_once_and_n_keeps_serving(n0, one_node, tmp_path):
    """Shard servers reserving 1.5 CPUs each: N's two take 3 of the cluster's 4, so N+1's two cannot be placed.
    The swap is refused at once (not after the start-up wait), counted, named in the log, and N keeps serving
    and applying changes."""
    import logging

    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < 4:  # the previous test's servers handed their CPUs back
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.05)
    settings = ServeSettings(model=str(n0), executor="ray", publish_poll_s=0.05, stream_block_ms=20, cache_size=0,
                             shard_server_cpus=1.5)
    app = create_app(settings=settings)
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    logging.getLogger("pymk.serving").addHandler(handler)
    try:
        with TestClient(app) as c:
            v0 = c.get("/healthz").json()["model_version"]
            n1 = update(n0, n0 / "stream" / "events.log", tmp_path / "n1", log=lambda s: None)
            res = runner.invoke(cli, ["publish", "--model", str(n1)])
            assert res.exit_code == 0, res.output
            deadline = time.monotonic() + 60  # well under the 300 s a server's start-up may take
            while not any("not swapped in" in r for r in records):
                assert time.monotonic() < deadline, records
                time.sleep(0.05)
            assert any("CPUs unreserved" in r and "PYMK_SHARD_SERVER_CPUS" in r for r in records), records
            assert c.get("/healthz").json()["model_version"] == v0
            r = c.post("/v1/edges", json={"src": 1, "dst": 299})
            assert r.status_code == 200 and not r.json()["degraded"]
            svc = app.state.service
            assert svc.model.graph.has_edge(*svc.model.index_of([1, 299]).tolist())
    finally:
        logging.getLogger("pymk.serving").removeHandler(handler)
