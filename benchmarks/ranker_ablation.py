"""Learned-ranker ablation under the shared protocol: all features vs feature groups removed.

    .venv/bin/python -m benchmarks.ranker_ablation --edges PATH [--splits S] [--train-users U] [--negatives R]

Splits the edges as `pymk eval` does, trains the ranker on the train graph exactly as `pymk build`
does (internal held-out split, Stage 1's candidates), and reports test recall@20 / NDCG@10 / MRR of
the Stage-1 candidates ranked by: LightGBM on all features, LightGBM without a feature group (the
columns set to missing in training and at test), and Adamic-Adar. Prints the gain importance too.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from pymk.candidates.stage1 import Stage1
from pymk.config import PymkConfig
from pymk.eval.metrics import hit_matrix, ranking_metrics
from pymk.eval.protocol import split_edges
from pymk.features.pairs import EMBEDDING_FEATURES, GRAPH_FEATURES, PAIR_FEATURES, pair_features
from pymk.features.store import InProcessFeatureStore, user_feature_table
from pymk.graph.snapshot import CSRGraph
from pymk.pipeline.build import ingest
from pymk.ranking import make_ranker
from pymk.ranking.learned import train_ranker, training_data

GROUPS = {
    "all features": (),
    "without graph features": GRAPH_FEATURES + ("aa_rel", "ra_rel", "ppr_rel", "aa_rank", "ppr_rank", "paths3_rank"),
    "without embeddings": EMBEDDING_FEATURES,
    "without Stage-1 position": ("stage1_pos",),
    "without ridge": ("ridge",),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--edges", type=Path, required=True)
    defaults = PymkConfig().ranker
    ap.add_argument("--splits", type=int, default=defaults.splits)
    ap.add_argument("--train-users", type=int, default=defaults.train_users)
    ap.add_argument("--negatives", type=float, default=defaults.negatives)
    args = ap.parse_args()
    edges, _ = ingest(args.edges, show_progress=False, log=lambda s: None)
    split = split_edges(edges)
    g = CSRGraph.from_edges(split.train)
    users, n = split.users, edges.num_users
    n_truth = np.diff(split.truth_ptr)
    cfg = PymkConfig()
    cfg.ranker.splits, cfg.ranker.train_users, cfg.ranker.negatives = args.splits, args.train_users, args.negatives
    t = time.perf_counter()
    data = training_data(g, cfg, log=lambda s: None)
    batch = Stage1(g, cfg.candidates).generate(users)
    X_test, _ = pair_features(batch, g, InProcessFeatureStore(user_feature_table(g), 0))
    print(f"{args.edges.name}: {data['group'].size} training users, {int(data['y'].sum())} positives "
          f"({time.perf_counter() - t:.0f}s)")

    def metrics(scores):
        s = np.where(batch.valid, scores, -np.inf)
        order = np.argsort(-s, axis=1, kind="stable")[:, :1000]
        lists = np.where(np.take_along_axis(batch.valid, order, 1), np.take_along_axis(batch.cand, order, 1), -1)
        return ranking_metrics(hit_matrix(lists, users.size, split.truth_ptr, split.truth_idx, n), n_truth)

    print(f"{'ranker':<36}{'recall@20':>10}{'ndcg@10':>9}{'mrr':>8}")
    aa = metrics(make_ranker("adamic_adar").score(batch))
    for name, drop in GROUPS.items():
        cols = [PAIR_FEATURES.index(f) for f in drop]
        X = data["X"].copy()
        X[:, cols] = np.nan
        booster, summary = train_ranker({**data, "X": X}, cfg, log=lambda s: None)
        Xt = X_test.copy()
        Xt[:, :, cols] = np.nan
        m = metrics(booster.predict(Xt.reshape(-1, Xt.shape[2]), num_threads=1).reshape(Xt.shape[:2]))
        print(f"{'lightgbm ' + name:<36}{m['recall@20']:>10.4f}{m['ndcg@10']:>9.4f}{m['mrr']:>8.4f}")
        if not drop:
            importance = summary["importance"]
    print(f"{'adamic_adar':<36}{aa['recall@20']:>10.4f}{aa['ndcg@10']:>9.4f}{aa['mrr']:>8.4f}")
    print("gain importance (all features): " + ", ".join(f"{k} {v:.3f}" for k, v in importance.items() if v > 0))


if __name__ == "__main__":
    main()
