"""Embedding retrieval: exact (brute-force) inner-product search over user embeddings, excluding the
user and its friends. The reference every ANN index must match. Finds users whose learned
neighbourhood representation is close, including ones beyond two hops."""

from __future__ import annotations

import numpy as np
import torch

from pymk.graph.rows import gather
from pymk.graph.snapshot import CSRGraph


@torch.no_grad()
def exact_search(emb: np.ndarray, queries: np.ndarray, k: int, graph: CSRGraph | None = None,
                 chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-k users by inner product for each query, best first; self and friends excluded.

    Args:
        emb: (n, d) float32 embeddings; queries: (B,) dense indices; k: capped at n.
        graph: whose friendships are excluded (None: only self).
    Returns:
        scores (B, k) float32 (-inf past the available candidates), idx (B, k) int64 (-1 there).
    """
    arr = np.ascontiguousarray(emb, np.float32)
    e = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    n = e.shape[0]
    queries = np.asarray(queries, np.int64)
    k = min(k, n)
    scores = np.full((queries.size, k), -np.inf, np.float32)
    idx = np.full((queries.size, k), -1, np.int64)
    for s in range(0, queries.size, chunk):
        q = queries[s:s + chunk]
        sc = e[torch.from_numpy(q)] @ e.T
        rows = np.arange(q.size)
        sc[rows, q] = -torch.inf
        if graph is not None:
            ptr, friends = gather(graph, q)
            r = np.repeat(rows, np.diff(ptr))
            has = friends < n  # friends who joined after the embeddings were made have no column
            r, friends = r[has], friends[has]
            sc[torch.from_numpy(r), torch.from_numpy(friends.astype(np.int64))] = -torch.inf
        top = torch.topk(sc, k, dim=1)
        v, i = top.values.numpy(), top.indices.numpy()
        scores[s:s + chunk] = v
        idx[s:s + chunk] = np.where(np.isfinite(v), i, -1)
    return scores, idx
