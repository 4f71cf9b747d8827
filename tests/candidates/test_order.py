"""Stage 1's friends-of-friends order chosen on the build's internal split (`candidates.fof.score = "auto"`)."""

import json

import numpy as np
import pytest

from pymk.candidates.order import MARGIN, ORDERS, choose_fof_order
from pymk.config import PymkConfig
from pymk.pipeline.build import build_from_edges
from pymk.pipeline.update import snapshot_edges
from pymk.ranking.learned import internal_graph
from tests.helpers import nx_graph, reference_fof, synth_graph

K = 15


def _config(**kw):
    return PymkConfig.from_dict({"candidates": {"k": K, "popular_fill": False, "ppr": {"enabled": False}, **kw},
                                 "ranker": {"kind": "adamic_adar"}})


def _hubby():
    # hubs far above the Chung-Lu bound: 2-hop sets much larger than K, so the order decides the recall
    return synth_graph(700, 8, seed=2, gamma=2.0, max_degree=250)


def test_measured_recall_equals_brute_force_and_the_best_order_is_kept():
    g = _hubby()
    cfg = _config()
    order, summary = choose_fof_order(g, cfg, log=lambda s: None)
    # reference: the same held-out friendships, every 2-hop non-friend of G' scored by networkx
    sub, ha, hb = internal_graph(g, cfg, 0)
    G = nx_graph(sub)
    truth = {}
    for a, b in zip(np.r_[ha, hb].tolist(), np.r_[hb, ha].tolist(), strict=True):
        truth.setdefault(a, set()).add(b)
    assert summary["users"] == len(truth)  # small graph: every user with a held-out friend
    total = sum(len(t) for t in truth.values())
    ref = {}
    for col, name in enumerate(("cn", "aa", "ra")):
        hits = 0
        for u, t in truth.items():
            sc = reference_fof(G, u)
            top = sorted(sc, key=lambda c: (-round(sc[c][col], 9), c))[:K]  # ties: smaller index
            hits += len(t & set(top))
        ref[name] = hits / total
    got = summary[f"recall@{K}"]
    for name in ORDERS:
        assert got[name] == pytest.approx(ref[name], abs=2e-3), name
    best = max(ORDERS, key=lambda o: got[o])
    assert order == (best if got[best] > got["aa"] + MARGIN else "aa")
    assert summary["chosen"] == order
    assert len({round(v, 3) for v in got.values()}) > 1  # the orders differ here: the choice means something


def test_build_records_the_chosen_order_and_keeps_an_explicit_one(tmp_path):
    g = _hubby()
    out = build_from_edges(snapshot_edges(g), tmp_path / "auto", _config(), log=lambda s: None)
    meta = json.loads((out / "model.json").read_text())
    chosen = meta["stages"]["stage1"]["chosen"]
    assert chosen in ORDERS and meta["config"]["candidates"]["fof"]["score"] == chosen
    out = build_from_edges(snapshot_edges(g), tmp_path / "cn", _config(fof={"score": "cn"}), log=lambda s: None)
    meta = json.loads((out / "model.json").read_text())
    assert "stage1" not in meta["stages"] and meta["config"]["candidates"]["fof"]["score"] == "cn"
