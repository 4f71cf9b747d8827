"""A deployment's versions share one growing event log: each `pymk update` folds only what came after its
parent's cut (checked against networkx replaying every event on the first version's graph), a log of another
lineage is refused, and a Redis deployment's stream is read the same way."""

import json

import networkx as nx
import numpy as np
import pytest
from typer.testing import CliRunner

from pymk.cli import app
from pymk.graph.snapshot import CSRGraph
from pymk.pipeline.lineage import LineageError, Pointer, lineage, stream_key
from pymk.pipeline.update import update
from pymk.stream.log import FileEventLog, RedisEventLog
from tests.helpers import build_learned_model

runner = CliRunner()
QUIET = {"log": lambda s: None}


def _append_day(log, ids: np.ndarray, rng, day: int, taken: list[tuple[int, int]]) -> list[tuple]:
    """A day of changes: new friendships (some to new ids), removals of existing ones (some made earlier
    today or on an earlier day), re-adds of removed ones, one erasure. Returns the events as (op, a, b)."""
    t = 2e9 + day * 86_400
    out = []
    for _ in range(40):
        a, b = rng.choice(ids, 2, replace=False).tolist()
        out.append(("add", a, b))
    for k in range(4):
        for f in rng.choice(ids, 2, replace=False).tolist():
            out.append(("add", 1_000_000 + 10 * day + k, f))
    for a, b in taken[:10]:
        out.append(("remove", a, b))
    for a, b in taken[:3]:  # removed and made again the same day
        out.append(("add", a, b))
    victim = int(rng.choice(ids))
    out.append(("erase", victim, victim))
    for op, a, b in out:
        log.append(int(a), int(b), t, op)
    return out


def _reference(graph: CSRGraph, days: list[list[tuple]]) -> set[tuple[int, int]]:
    g = nx.Graph()
    g.add_nodes_from(np.asarray(graph.ids).tolist())
    lo, hi = graph.edge_pairs()
    g.add_edges_from(zip(np.asarray(graph.ids)[lo].tolist(), np.asarray(graph.ids)[hi].tolist(), strict=True))
    erased = set()
    for day in days:
        for op, a, b in day:
            if a in erased or b in erased:
                continue  # an erased account is never recreated
            if op == "add":
                g.add_edge(a, b)
            elif op == "remove" and g.has_edge(a, b):
                g.remove_edge(a, b)
            elif op == "erase" and a in g:
                g.remove_node(a)
                erased.add(a)
    return {(min(a, b), max(a, b)) for a, b in g.edges()}


def _pairs(d) -> set[tuple[int, int]]:
    g = CSRGraph.load(d / "graph")
    lo, hi = g.edge_pairs()
    ids = np.asarray(g.ids)
    return {(min(a, b), max(a, b)) for a, b in zip(ids[lo].tolist(), ids[hi].tolist(), strict=True)}


def _meta(d) -> dict:
    return json.loads((d / "model.json").read_text())


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_learned_model(tmp_path_factory.mktemp("lin") / "n", users=300)


def test_each_update_folds_what_came_after_its_parents_cut(base, tmp_path):
    meta0 = _meta(base)
    g0 = CSRGraph.load(base / "graph")
    ids = np.asarray(g0.ids)
    lo, hi = g0.edge_pairs()
    taken = list(zip(ids[lo].tolist(), ids[hi].tolist(), strict=True))
    path = tmp_path / "deploy" / "events.log"
    log = FileEventLog(path, lineage=lineage(meta0))  # as the service serving version N creates it
    assert log.lineage == lineage(meta0)
    rng = np.random.default_rng(1)
    day1 = _append_day(log, ids, rng, 1, taken)
    n1 = update(base, path, tmp_path / "n1", **QUIET)
    assert _pairs(n1) == _reference(g0, [day1])
    m1 = _meta(n1)
    assert m1["lineage"] == lineage(meta0) and m1["events"]["from"] is None
    assert int(m1["events"]["through"]) == path.stat().st_size

    added_today = [(int(a), int(b)) for op, a, b in day1 if op == "add" and a < 1_000_000 and b < 1_000_000]
    day2 = _append_day(log, ids, rng, 2, added_today[::-1] + taken[20:])  # removes some of day 1's adds
    n2 = update(n1, path, tmp_path / "n2", **QUIET)
    assert _pairs(n2) == _reference(g0, [day1, day2])
    m2 = _meta(n2)
    assert m2["lineage"] == lineage(meta0) and m2["events"]["from"] == m1["events"]["through"]
    assert m2["stages"]["graph"]["events"] == len(day2)  # day 1 was not folded again

    n3 = update(n2, path, tmp_path / "n3", **QUIET)  # nothing since: the same graph
    assert _pairs(n3) == _pairs(n2) and _meta(n3)["stages"]["graph"]["events"] == 0


def test_a_log_of_another_lineage_is_refused(base, tmp_path):
    other = tmp_path / "other.log"
    FileEventLog(other, lineage="0.1.0-deadbeef").append(1, 2, 2e9)
    with pytest.raises(LineageError, match="belongs to model lineage 0.1.0-deadbeef"):
        update(base, other, tmp_path / "n1", **QUIET)
    res = runner.invoke(app, ["update", "--model", str(base), "--events", str(other), "--out", str(tmp_path / "n1")])
    assert res.exit_code == 1 and "belongs to model lineage 0.1.0-deadbeef" in res.stderr
    assert not (tmp_path / "n1").exists()
    # a pointer refuses a version of another lineage
    with pytest.raises(LineageError, match="lineage"):
        Pointer("0.1.0-deadbeef", log_path=other).write(base, _meta(base))


def test_update_reads_a_redis_deployments_stream(base, redis_server, tmp_path):
    import redis

    meta0 = _meta(base)
    g0 = CSRGraph.load(base / "graph")
    ids = np.asarray(g0.ids)
    lo, hi = g0.edge_pairs()
    client = redis.Redis.from_url(redis_server.url)
    log = RedisEventLog(client, stream_key(lineage(meta0)))
    try:
        day1 = _append_day(log, ids, np.random.default_rng(2), 1,
                           list(zip(ids[lo].tolist(), ids[hi].tolist(), strict=True)))
        res = runner.invoke(app, ["update", "--model", str(base), "--events", redis_server.url,
                                  "--out", str(tmp_path / "n1")])
        assert res.exit_code == 0, res.output
        assert _pairs(tmp_path / "n1") == _reference(g0, [day1])
        rec = _meta(tmp_path / "n1")["events"]
        assert rec["log"] == f"redis:{stream_key(lineage(meta0))}" and rec["through"] == log.end()
        res = runner.invoke(app, ["publish", "--model", str(tmp_path / "n1")])  # its services read Redis
        assert res.exit_code == 1 and "updated from a Redis stream" in res.stderr
    finally:
        client.delete(log.key)
    res = runner.invoke(app, ["update", "--model", str(base), "--events", redis_server.url,
                              "--out", str(tmp_path / "n2")])
    assert res.exit_code == 1 and "holds no event stream" in res.stderr


def test_recommend_live_on_an_updated_version_replays_only_after_its_cut(base, tmp_path):
    """`pymk recommend --live` (the CLI's `_load`) on version N+1: N+1's snapshot plus the log after its cut
    (networkx replaying every event on N's graph), and the blocks N+1 carries kept out of the answers."""
    from pymk.cli import _load

    meta0 = _meta(base)
    g0 = CSRGraph.load(base / "graph")
    ids = np.asarray(g0.ids)
    lo, hi = g0.edge_pairs()
    taken = list(zip(ids[lo].tolist(), ids[hi].tolist(), strict=True))
    path = tmp_path / "events.log"
    log = FileEventLog(path, lineage=lineage(meta0))
    rng = np.random.default_rng(5)
    day1 = _append_day(log, ids, rng, 1, taken)
    erased = {a for op, a, _ in day1 if op == "erase"}
    x, y = (int(u) for u in ids[~np.isin(ids, list(erased))][:2])
    log.append(x, y, 2e9, "block")  # before N+1's cut: carried in its standing, not replayed
    n1 = update(base, path, tmp_path / "n1", **QUIET)
    day2 = _append_day(log, ids, rng, 2, taken[30:])
    m, blocked = _load(n1, live=True)
    g = m.graph.to_graph()
    a, b = g.edge_pairs()
    gids = np.asarray(g.ids)
    assert {(min(x, y), max(x, y)) for x, y in zip(gids[a].tolist(), gids[b].tolist(), strict=True)} == \
        _reference(g0, [day1, day2])
    ix, iy = m.index_of([x, y]).tolist()
    assert iy in blocked.get(ix, set()) and ix in blocked.get(iy, set())
