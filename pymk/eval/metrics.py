"""Ranking metrics of the protocol: Recall@K, NDCG@K (binary gains), MRR, Stage-1 micro recall."""

from __future__ import annotations

import numpy as np


def hit_matrix(lists: np.ndarray, users_n: int, truth_ptr: np.ndarray, truth_idx: np.ndarray,
               n: int) -> np.ndarray:
    """hits[b, j] = lists[b, j] is one of user b's truth ids.

    Shapes: lists (U, L) int64 with -1 padding; truth CSR over the U users -> (U, L) bool.
    """
    rows = np.repeat(np.arange(users_n, dtype=np.int64), np.diff(truth_ptr))
    truth_keys = np.sort(rows * n + truth_idx)
    keys = np.arange(users_n, dtype=np.int64)[:, None] * n + lists
    hits = np.isin(keys, truth_keys) & (lists >= 0)
    return hits


def ranking_metrics(hits: np.ndarray, n_truth: np.ndarray, ks=(10, 20, 50), ndcg_ks=(10,)) -> dict:
    """Averages over users of Recall@K, NDCG@K and MRR from a (U, L) hit matrix (best first)."""
    n_truth = np.maximum(n_truth, 1)
    out = {}
    for k in ks:
        out[f"recall@{k}"] = float(np.mean(hits[:, :k].sum(1) / n_truth))
    disc = 1.0 / np.log2(np.arange(hits.shape[1]) + 2.0)
    for k in ndcg_ks:
        dcg = (hits[:, :k] * disc[:k]).sum(1)
        ideal_n = np.minimum(k, n_truth)
        idcg = np.cumsum(disc[:k])[ideal_n - 1]
        out[f"ndcg@{k}"] = float(np.mean(dcg / idcg))
    first = np.where(hits.any(1), hits.argmax(1) + 1, 0)
    out["mrr"] = float(np.mean(np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)))
    return out


def micro_recall(hits: np.ndarray, n_truth: np.ndarray) -> float:
    """Sum of hits over users divided by the sum of their truth counts (the Stage-1 metric)."""
    return float(hits.sum() / max(1, n_truth.sum()))
