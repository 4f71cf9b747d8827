"""`pymk report` and `pymk eval --report`: one self-contained HTML file, each section drawn from its input or
said missing in words; bad inputs are named errors."""

import base64
import json
import re

import pytest
from typer.testing import CliRunner

from pymk.cli import app
from pymk.config import PymkConfig
from pymk.eval.report import write_report
from pymk.graph.locality import locality_report
from pymk.graph.partition import partition, plan_replicas
from pymk.graph.sharded import load_plan
from pymk.graph.snapshot import CSRGraph
from pymk.pipeline.build import build_from_edges
from tests.helpers import synth_graph

runner = CliRunner()


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def _section(page: str, title: str) -> str:
    start = page.index(f"<h2>{title}</h2>")
    nxt = page.find("<h2>", start + 4)
    return page[start: nxt if nxt >= 0 else len(page)]


@pytest.fixture(scope="module")
def edges_file(tmp_path_factory):
    g = synth_graph(400, 8, seed=2)
    path = tmp_path_factory.mktemp("report") / "edges.csv"
    lo, hi = g.edge_pairs()
    ids = g.ids
    path.write_text("".join(f"{ids[a]},{ids[b]}\n" for a, b in zip(lo.tolist(), hi.tolist(), strict=True)))
    return path


def test_eval_report_draws_recall_and_stage1_curves(edges_file, tmp_path):
    res = runner.invoke(app, ["eval", "--edges", str(edges_file), "--json", str(tmp_path / "e.json"),
                              "--report", str(tmp_path / "e.html")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "e.html").read_text()
    ev = json.loads((tmp_path / "e.json").read_text())
    evaluation = _section(page, "Evaluation")
    images = _images(evaluation)
    assert len(images) == 2 and all(i.startswith(b"\x89PNG\r\n\x1a\n") for i in images)  # Recall@K, Stage-1 depth
    for method, metrics in ev["methods"].items():  # the table holds the evaluation's own numbers
        assert f"<td>{method}</td>" in evaluation and f"<td>{metrics['recall@20']:.4f}</td>" in evaluation
    assert "No serving measurement" in page and "http" not in page.replace("http-equiv", "")  # nothing fetched


def test_model_report_with_shards_bench_and_missing_parts(edges_file, tmp_path):
    from pymk.pipeline.build import ingest

    e, _ = ingest(edges_file, log=lambda s: None)
    cfg = PymkConfig.from_dict({"ranker": {"kind": "adamic_adar"}, "sharding": {"shards": 2}})
    model = build_from_edges(e, tmp_path / "m", cfg, log=lambda s: None)
    bench = {"model": "m", "users": 400, "machine": "test", "uncached_ms": {"p50": 5.0, "p99": 9.0},
             "hit_ms": {"p50": 0.5, "p99": 1.0}, "step_ms": {"stage1": 2.0, "rank": 1.0},
             "step_share": {"stage1": 0.66, "rank": 0.33},
             "step_hist": {"stage1": [[0.001, 3], [0.0025, 10], [float("inf"), 12]],
                           "rank": [[0.001, 11], [0.0025, 12], [float("inf"), 12]]},
             "request_ms": {"uncached": [4.0, 5.0, 5.5, 9.0] * 3, "hit": [0.4, 0.5, 1.0] * 4}}
    (tmp_path / "b.json").write_text(json.dumps(bench))
    res = runner.invoke(app, ["report", "--model", str(model), "--bench", str(tmp_path / "b.json"),
                              "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r.html").read_text()
    assert "No evaluation" in _section(page, "Evaluation")
    assert len(_images(_section(page, "Serving latency"))) == 2  # whole requests, then each step
    graph = CSRGraph.load(model / "graph")
    rep = locality_report(graph, load_plan(model / "graph")).to_dict()
    shards = _section(page, "Shard locality")
    assert f"<td>two_hop_locality</td><td>{rep['two_hop_locality']:.4f}</td>" in shards
    assert len(_images(shards)) == 1  # locality and shards contacted across S
    for method in ("hash", "community"):  # each (method, S) row: that partition's own locality report
        for s in (4, 8, 16):
            home = partition(graph, s, method, balance=cfg.sharding.balance)
            r = locality_report(graph, plan_replicas(graph, home, s, method, cfg.sharding.replication))
            assert (f"<td>{method}</td><td>{s}</td><td>{r.two_hop_locality:.4f}</td>"
                    f"<td>{r.edge_locality:.4f}</td>") in shards
    assert "No staleness figures" in _section(page, "Embedding staleness")


def test_bad_inputs_are_named(tmp_path):
    res = runner.invoke(app, ["report", "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 1 and "nothing to report" in res.output
    res = runner.invoke(app, ["report", "--eval", str(tmp_path / "none.json"), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 1 and f"evaluation JSON not found: {tmp_path / 'none.json'}" in res.output
    (tmp_path / "bad.json").write_text("{oops")
    res = runner.invoke(app, ["report", "--bench", str(tmp_path / "bad.json"), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 1 and f"{tmp_path / 'bad.json'}: not JSON" in res.output
    res = runner.invoke(app, ["report", "--model", str(tmp_path), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 1 and "model.json" in res.output
    assert not (tmp_path / "r.html").exists()


def test_report_without_model_is_still_a_page(tmp_path):
    out = write_report(tmp_path / "x" / "r.html", evaluation={"dataset": "d", "methods": {}})
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<h2>Model</h2>" not in page and "No serving measurement" in page


def test_an_unsharded_models_report_shows_what_sharding_would_give(edges_file, tmp_path):
    from pymk.pipeline.build import ingest

    e, _ = ingest(edges_file, log=lambda s: None)
    model = build_from_edges(e, tmp_path / "m", PymkConfig.from_dict({"ranker": {"kind": "adamic_adar"}}),
                             log=lambda s: None)
    shards = _section(write_report(tmp_path / "r.html", model_dir=model).read_text(), "Shard locality")
    assert "not sharded" in shards and len(_images(shards)) == 1 and "<td>community</td><td>16</td>" in shards
    out = ["--out", str(tmp_path / "n.html")]
    res = runner.invoke(app, ["report", "--model", str(model), "--locality-shards", "", *out])
    assert res.exit_code == 0, res.output
    shards = _section((tmp_path / "n.html").read_text(), "Shard locality")
    assert "not sharded" in shards and not _images(shards)  # no curve asked for
    res = runner.invoke(app, ["report", "--model", str(model), "--locality-shards", "4,x", *out])
    assert res.exit_code == 1 and "--locality-shards" in res.output
