"""Whole-graph link scorers under the shared protocol, beside CN / AA / RA (small graphs: dense n x n).

    .venv/bin/python -m benchmarks.scorer_survey --edges PATH [--edges PATH ...]

Each scorer ranks every non-friend of each evaluation user; the table gives Recall@20 / Recall@10 / MRR.
It asks whether a global view of the train graph carries ranking signal that the local heuristics
(which the learned ranker already has) lack: a 3-hop Resource-Allocation term, item-kNN cosine
similarity, EASE (a ridge regression of each user's friend list on the others'), a truncated spectral
reconstruction, and Resource Allocation on the graph completed with each user's best-scored
non-friends ("edge proposal sets", Singh et al. 2021). Refuses graphs above 20,000 users.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pymk.eval.metrics import hit_matrix, ranking_metrics
from pymk.eval.protocol import split_edges
from pymk.pipeline.build import ingest

MAX_USERS = 20_000


def survey(path: Path) -> list[tuple[str, dict]]:
    edges, _ = ingest(path, show_progress=False, log=lambda s: None)
    n = edges.num_users
    if n > MAX_USERS:
        raise SystemExit(f"{path}: {n} users; the survey holds n x n matrices, at most {MAX_USERS} users")
    split = split_edges(edges)
    A = np.zeros((n, n), np.float32)
    A[split.train.lo, split.train.hi] = 1
    A[split.train.hi, split.train.lo] = 1
    d = A.sum(1)
    users = split.users
    known = A[users].astype(bool)
    known[np.arange(users.size), users] = True
    rows = []

    def add(name, scores):
        s = np.where(known, -np.inf, scores)
        top = np.argsort(-s, axis=1, kind="stable")[:, :50]  # ties: smaller index first, as the protocol says
        rows.append((name, ranking_metrics(hit_matrix(top, users.size, split.truth_ptr, split.truth_idx, n),
                                           np.diff(split.truth_ptr))))

    inv = 1 / np.maximum(d, 1)
    add("CN", A[users] @ A)
    add("AA", (A[users] / np.log(np.maximum(d, 2))) @ A)
    ra_u = (A[users] * inv) @ A
    add("RA", ra_u)
    ra3_u = (ra_u * inv) @ A  # paths u - a - b - c weighted 1 / (deg a deg b)
    for eps in (0.05, 0.2):
        add(f"RA + {eps} RA3 (local path)", ra_u + eps * ra3_u)
    dn = 1 / np.sqrt(np.maximum(d, 1))
    An = A * dn[:, None] * dn[None, :]
    add("item-kNN cosine (A D^-1/2 A D^-1/2 ...)", A[users] @ (An @ An))
    for lam in (50.0, 200.0):
        P = np.linalg.inv(A.T @ A + lam * np.eye(n, dtype=np.float32))
        B = -P / np.diag(P)[None, :]
        np.fill_diagonal(B, 0)
        add(f"EASE lambda={lam:g}", A[users] @ B)
    w, V = np.linalg.eigh(An)
    for k in (128, 512):
        idx = np.argsort(-np.abs(w))[:k]
        add(f"spectral rank {k}", (V[users][:, idx] * w[idx]) @ V[:, idx].T)
    ra_all = (A * inv) @ A
    ra_all[A.astype(bool)] = -np.inf
    np.fill_diagonal(ra_all, -np.inf)
    best = np.argsort(-ra_all, axis=1, kind="stable")
    for k, wt in ((1, 0.3), (3, 0.3), (10, 0.3), (3, 1.0)):
        r, c = np.repeat(np.arange(n), k), best[:, :k].ravel()
        ok = ra_all[r, c] > 0
        E = np.zeros_like(A)
        E[r[ok], c[ok]] = wt
        Ap = A + np.maximum(E, E.T)
        add(f"RA on G + top-{k} proposals (weight {wt:g})", (Ap[users] / np.maximum(Ap.sum(1), 1)) @ Ap)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--edges", type=Path, action="append", required=True)
    args = ap.parse_args()
    for path in args.edges:
        print(f"\n{path.name}\n{'scorer':<44}{'R@20':>8}{'R@10':>8}{'MRR':>8}")
        for name, m in survey(path):
            print(f"{name:<44}{m['recall@20']:>8.4f}{m['recall@10']:>8.4f}{m['mrr']:>8.4f}", flush=True)


if __name__ == "__main__":
    main()
