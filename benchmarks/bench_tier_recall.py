"""The stateless ranking tier's quality against the whole-graph model, under the shared protocol.

    .venv/bin/python -m benchmarks.bench_tier_recall [--datasets ego-facebook,lastfm-asia] [--shards 4]
        [--method hash] [--json OUT]

For each shared dataset: the protocol's split (`pymk.eval.protocol`), one `pymk build --shards S` of the
train graph (default config otherwise), then the same model opened twice: as the whole-graph model
(`Model.load`) and as the ranking tier over in-process shard servers (`Model.load(..., tier=True)`), whose
PPR is pushed by the servers one hop a round (same eps guarantee, another push order). Reported side by
side: Stage-1 recall@1000 (the PPR-driven candidate set), Recall@20, NDCG@10 and MRR of the served ranking,
and how many eval users got the identical friends-of-friends candidates and mutual counts, for each bound on
the tier's PPR push rounds (`candidates.ppr.rounds`; 0: until every residual is below eps * degree), with
the PPR mass left unpushed per user.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from pymk.config import PymkConfig
from pymk.eval.metrics import hit_matrix, micro_recall, ranking_metrics
from pymk.eval.protocol import split_edges
from pymk.graph.edges import normalize_edges
from pymk.graph.ingest import read_edges
from pymk.pipeline.build import build_from_edges
from pymk.pipeline.model import Model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
FILES = {"ego-facebook": "ego-facebook.txt.gz", "lastfm-asia": "lastfm-asia.csv.gz"}


def synth_edges(users: int, degree: float):
    """`pymk synth --users N --avg-degree D --seed 0` (cached by bench_fof) as an edge list."""
    from benchmarks.bench_fof import load_graph
    from pymk.graph.edges import EdgeList

    g = load_graph(users, degree, Path("/tmp/pymk-bench"))
    lo, hi = g.edge_pairs()
    return EdgeList(np.asarray(g.ids), lo.astype(np.int32), hi.astype(np.int32))


def measure(name: str, shards: int, method: str, rounds: list[int], ranker: str | None = None) -> dict:
    if name.startswith("synth-"):
        edges = synth_edges(int(float(name.split("-")[1])), 10)
    else:
        edges, _ = normalize_edges(read_edges(SHARED / FILES[name]))
    split = split_edges(edges)
    users, n = split.users, edges.num_users
    n_truth = np.diff(split.truth_ptr)
    cfg = PymkConfig()
    cfg.sharding.shards = shards
    cfg.sharding.method = method
    if ranker:
        cfg.ranker.kind = ranker
    out = {"dataset": name, "shards": shards, "method": method, "eval_users": int(users.size)}
    with tempfile.TemporaryDirectory(prefix="pymk-tier-") as tmp:
        t = time.perf_counter()
        build_from_edges(split.train, Path(tmp) / "m", cfg, log=lambda s: None)
        out["build_s"] = round(time.perf_counter() - t, 1)
        tier = Model.load(Path(tmp) / "m", tier=True)
        runs = [("whole", Model.load(Path(tmp) / "m"), None)] + [(f"tier_r{r}", tier, r) for r in rounds]
        for label, model, r in runs:
            if r is not None:
                model.config.candidates.ppr.rounds = r
            left0 = tier.servers.stats.ppr_left
            t = time.perf_counter()
            cands = model.candidates(users, k=1000)
            ranked = model.recommend(users, 1000)
            hits = hit_matrix(ranked.cand, users.size, split.truth_ptr, split.truth_idx, n)
            row = {"stage1_recall@1000": micro_recall(hit_matrix(cands.cand, users.size, split.truth_ptr,
                                                                 split.truth_idx, n), n_truth),
                   **ranking_metrics(hits, n_truth), "seconds": round(time.perf_counter() - t, 1)}
            if r is not None:  # PPR mass left unpushed per eval user (the L1 error bound), over both passes
                row["ppr_left_per_user"] = (tier.servers.stats.ppr_left - left0) / (2 * users.size)
            out[label] = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            alone = model.candidates(users, k=1000, sources=("fof",))
            fof = (alone.cand, alone.features["cn"])
            if r is None:
                want = fof
            else:  # friends-of-friends alone: same candidates, order and mutual counts
                out[label]["fof_equal_users"] = int(sum(np.array_equal(want[0][i], fof[0][i]) and
                                                        np.array_equal(want[1][i], fof[1][i])
                                                        for i in range(users.size)))
                for metric in ("stage1_recall@1000", "recall@20"):
                    out[label][f"{metric}_delta_points"] = round(100 * (out[label][metric] - out["whole"][metric]), 2)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="ego-facebook,lastfm-asia", help="shared graphs, or synth-N (pymk synth "
                    "--users N --avg-degree 10 --seed 0)")
    ap.add_argument("--ranker", help="override the ranker (e.g. adamic_adar: no training, on large graphs)")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--method", default="hash")
    ap.add_argument("--rounds", default="1,2,4,0", help="the tier's PPR push rounds to measure (0: until eps)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    for name in args.datasets.split(","):
        rows.append(measure(name, args.shards, args.method, [int(r) for r in args.rounds.split(",")], args.ranker))
        print(json.dumps(rows[-1], indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
