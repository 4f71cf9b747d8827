"""Popularity fill: tops up a user's short candidate list with the most-connected users who are not
the user, a friend, blocked or already listed. Users with few friends (new users, sparse regions)
have few or no friends-of-friends; this source gives them something reasonable to rank."""

from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from pymk.candidates.fof import SERIAL_BATCH
from pymk.graph import rows as R
from pymk.graph.snapshot import CSRGraph
from pymk.workspace import thread_scratch


def popularity_order(graph: CSRGraph) -> np.ndarray:
    """Dense indices by degree descending, ties by smaller index. Shape: (n,) int64."""
    return np.argsort(-np.asarray(graph.degree), kind="stable").astype(np.int64)


@njit(cache=True)
def _fill_user(g, u, blocked, pool, row, c, mark, stamp):
    """Appends pool entries not excluded to row[c:]; returns the new fill count."""
    width = row.shape[0]
    mark[u] = stamp
    fu = R.row(g, u)
    for j in range(fu.shape[0]):
        mark[fu[j]] = stamp
    for j in range(blocked.shape[0]):
        mark[blocked[j]] = stamp
    for j in range(c):
        mark[row[j]] = stamp
    for p in range(pool.shape[0]):
        if c >= width:
            break
        x = pool[p]
        if mark[x] != stamp:
            row[c] = x
            c += 1
    return c


@njit(cache=True, parallel=True)
def _fill(g, users, blk_ptr, blk_idx, pool, cand, count, n_chunks, serial_mark, stamp0):
    n = R.nusers(g)
    nb, width = cand.shape
    for ch in prange(n_chunks):
        # one chunk (small batches) reuses the caller's mark array with fresh stamps
        mark = serial_mark if n_chunks == 1 else np.zeros(n, np.int64)
        for b in range(ch, nb, n_chunks):
            u = users[b]
            if u < 0 or count[b] >= width:
                continue
            count[b] = _fill_user(g, u, blk_idx[blk_ptr[b]:blk_ptr[b + 1]], pool, cand[b],
                                  count[b], mark, stamp0 + b + 1)


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
    if not nb:
        return before
    n = R.capacity(graph)
    ws = thread_scratch("popular", n, lambda n: [np.zeros(n, np.int64), 0])  # [mark, stamp]: no re-zeroing
    n_chunks = 1 if nb <= SERIAL_BATCH else max(1, min(nb, get_num_threads()))
    _fill(R.view(graph), users, blk_ptr, blk_idx, pool, cand, count, n_chunks, ws[0], ws[1])
    ws[1] += nb + 1
    return before
