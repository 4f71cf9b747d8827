"""Popularity fill: tops up a user's short candidate list with the most-connected users who are not
the user, a friend, blocked or already listed. Users with few friends (new users, sparse regions)
have few or no friends-of-friends; this source gives them something reasonable to rank."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from pymk.graph.snapshot import CSRGraph


def popularity_order(graph: CSRGraph) -> np.ndarray:
    """Dense indices by degree descending, ties by smaller index. Shape: (n,) int64."""
    return np.argsort(-np.asarray(graph.degree), kind="stable").astype(np.int64)


@njit(cache=True, parallel=True)
def _fill(indptr, indices, users, blk_ptr, blk_idx, pool, cand, count, n_chunks):
    n = indptr.shape[0] - 1
    nb, width = cand.shape
    for ch in prange(n_chunks):
        mark = np.zeros(n, np.int64)
        for b in range(ch * nb // n_chunks, (ch + 1) * nb // n_chunks):
            u = users[b]
            if u < 0 or count[b] >= width:
                continue
            stamp = b + 1
            mark[u] = stamp
            for j in range(indptr[u], indptr[u + 1]):
                mark[indices[j]] = stamp
            for j in range(blk_ptr[b], blk_ptr[b + 1]):
                mark[blk_idx[j]] = stamp
            for j in range(count[b]):
                mark[cand[b, j]] = stamp
            c = count[b]
            for p in range(pool.shape[0]):
                if c >= width:
                    break
                x = pool[p]
                if mark[x] != stamp:
                    cand[b, c] = x
                    c += 1
            count[b] = c


def fill_from_pool(graph: CSRGraph, users: np.ndarray, cand: np.ndarray, count: np.ndarray,
                   pool: np.ndarray, blk_ptr: np.ndarray, blk_idx: np.ndarray) -> np.ndarray:
    """Appends pool entries (in pool order) to each row of `cand` in place, up to its width.

    Args:
        users: (B,) dense indices; cand: (B, C) int64, -1 padded; count: (B,) int64, updated in place.
        pool: (P,) dense indices in fill order; blk_ptr/blk_idx: per-user blocked ids (CSR form).
    Returns:
        the count of each row before filling, (B,).
    """
    before = count.copy()
    nb = users.shape[0]
    if nb:
        _fill(graph.indptr, graph.indices, users, blk_ptr, blk_idx, pool, cand, count,
              max(1, min(nb, 64)))
    return before
