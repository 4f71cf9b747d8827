import json

import pytest
from typer.testing import CliRunner

from pymk.cli import app
from pymk.serving.capacity import CapacityInputs, measured, plan


def values(x=None):
    return {name: value for name, value, _, _ in plan(x or CapacityInputs())}


def test_defaults_reproduce_the_brief():
    v = values()
    assert v["requests/s, average"] == pytest.approx(35_000, rel=0.01)  # 3B / 86,400
    assert v["requests/s, peak"] == pytest.approx(70_000, rel=0.01)
    assert v["full-pipeline requests/s"] == pytest.approx(21_000, rel=0.01)
    assert v["ranking machines"] == 131  # the brief rounds 20,833 RPS up to 21,000 first: ~132
    assert v["ranking machines with headroom"] == pytest.approx(200, rel=0.02)
    assert v["ANN shards"] == 32
    assert v["embeddings, all users"] == pytest.approx(512)
    assert v["cached recommendations"] == pytest.approx(6.0, rel=0.03)
    assert 30 <= v["feature-store Redis nodes"] <= 50


def test_int8_embeddings_quarter_the_bytes():
    x = CapacityInputs(emb_bytes_per_value=1 + 4 / 128)
    assert values(x)["embeddings, all users"] == pytest.approx(132)


def test_measured_figures_replace_the_assumptions(tmp_path):
    f = tmp_path / "serve.json"
    f.write_text(json.dumps({"users": 1_000_000, "machine": "test", "step_ms": {"stage1": 5.0, "rank": 5.0},
                             "hit_ms": {"mean": 1.0}, "zipf": {"exponent": 1.1, "requests": 100, "hit_rate": 0.8}}))
    x, notes = measured(CapacityInputs(), f)
    assert x.cpu_ms_per_request == 10.0 and x.cpu_ms_per_hit == 1.0 and x.cache_hit_rate == 0.8
    assert x.users == 1e9  # the benchmark graph's size is not the planned one
    assert len(notes) == 3
    v = values(x)
    full = 1e9 * 3 / 86_400 * 2 * 0.2
    assert v["CPU needed"] == pytest.approx(full * 0.010 + full * 4 * 0.001)


def test_cli(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["capacity", "--set", "users=2e9", "--json", str(tmp_path / "p.json")])
    assert res.exit_code == 0 and "ANN shards" in res.output
    plan_json = json.loads((tmp_path / "p.json").read_text())
    assert plan_json["inputs"]["users"] == 2e9
    assert [r for r in plan_json["plan"] if r["quantity"] == "ANN shards"][0]["value"] == 63
    bad = runner.invoke(app, ["capacity", "--set", "userz=1"])
    assert bad.exit_code != 0 and "userz" in bad.output + (bad.stderr or "")


def test_the_nightly_pipeline_is_projected_from_its_measured_cost(tmp_path):
    assert "full build, wall" not in values()  # nothing measured: no offline rows
    scale = tmp_path / "scale.json"
    scale.write_text(json.dumps({"machine": "test 2 cores", "cores": 2, "rows": [
        {"users": 1000, "build": {"seconds": 1.0, "edges": 10_000}},
        {"users": 10_000, "build": {"seconds": 50.0, "edges": 100_000}}]}))
    update = tmp_path / "update.json"
    update.write_text(json.dumps({"update_s": 5.0, "build_s": 50.0, "update_over_build": 0.1, "events": 10}))
    x, _ = measured(CapacityInputs(), scale)
    x, _ = measured(x, update)
    assert x.build_cpu_s_per_edge == pytest.approx(50.0 * 2 / 100_000)  # the largest graph's cost
    v = values(x)
    edges = 1e9 * 100 / 2
    cpu_s = edges * 1e-3
    assert v["friendships"] == edges and v["full build, CPU"] == pytest.approx(cpu_s / 3600)
    assert v["full build, wall"] == pytest.approx(cpu_s / (100 * 32) / 3600)
    assert v["daily update, wall"] == pytest.approx(v["full build, wall"] * 0.1)
    res = CliRunner().invoke(app, ["capacity", "--measured", str(scale), "--measured", str(update)])
    assert res.exit_code == 0 and "daily update, wall" in res.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": [{"users": 1}]}))
    res = CliRunner().invoke(app, ["capacity", "--measured", str(bad)])
    assert res.exit_code != 0
