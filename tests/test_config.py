import pytest

from pymk.config import ConfigError, PymkConfig


def test_defaults_roundtrip():
    cfg = PymkConfig()
    assert PymkConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(("data", "msg"), [
    ({"rankr": {}}, "unknown config key rankr"),
    ({"candidates": {"fof": {"scor": "aa"}}}, "unknown config key candidates.fof.scor"),
    ({"candidates": {"k": "many"}}, "candidates.k must be int"),
    ({"candidates": {"k": True}}, "candidates.k must be int"),
    ({"candidates": {"k": 0}}, "candidates.k must be >= 1"),
    ({"candidates": {"fof": {"score": "pr"}}}, "candidates.fof.score must be one of"),
    ({"ranker": {"kind": "gbdt"}}, "ranker.kind must be one of"),
])
def test_bad_config_names_the_key(data, msg):
    with pytest.raises(ConfigError, match=msg):
        PymkConfig.from_dict(data)


def test_from_file_json_and_toml(tmp_path):
    (tmp_path / "c.json").write_text('{"candidates": {"k": 7}}')
    assert PymkConfig.from_file(tmp_path / "c.json").candidates.k == 7
    (tmp_path / "c.toml").write_text("[candidates\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        PymkConfig.from_file(tmp_path / "c.toml")
