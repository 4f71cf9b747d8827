"""Explanations: which mutual friends a recommendation rests on ("12 mutual friends: Ann, Bo, ...").

For each recommended (u, c), up to `m` common friends, the least-connected first: a friend with few
friends says more about both of them (it is also the friend with the largest Adamic-Adar weight).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from pymk.graph import rows as R


@njit(inline="always")
def _keep_least(best, best_d, v, d):
    """Inserts friend v of degree d into the m least-connected so far (ties: the one met first, i.e. the
    smaller index)."""
    k = best.shape[0] - 1
    if d < best_d[k]:
        while k > 0 and best_d[k - 1] > d:
            best_d[k] = best_d[k - 1]
            best[k] = best[k - 1]
            k -= 1
        best_d[k] = d
        best[k] = v


@njit(parallel=True, cache=True)
def _sample(g, users, cand, count, m, out):
    for b in prange(users.shape[0]):
        u = users[b]
        if u < 0:
            continue
        nu = R.row(g, u)
        for j in range(count[b]):
            c = cand[b, j]
            nc = R.row(g, c)
            # both rows are sorted: merge-intersect, keep the m of lowest degree (ties: smaller index)
            best = np.full(m, -1, np.int64)
            best_d = np.full(m, np.iinfo(np.int64).max, np.int64)
            x = 0
            y = 0
            while x < nu.shape[0] and y < nc.shape[0]:
                if nu[x] < nc[y]:
                    x += 1
                elif nu[x] > nc[y]:
                    y += 1
                else:
                    _keep_least(best, best_d, nu[x], R.deg(g, nu[x]))
                    x += 1
                    y += 1
            out[b, j, :] = best


_sample_serial = njit(nogil=True)(_sample.py_func)  # prange runs as range; not cached: same function, other flags


def mutual_sample(graph, users, cand, count, m: int = 3) -> np.ndarray:
    """Up to m mutual friends per (user, candidate), least-connected first.

    Shapes: users (B,), cand (B, k), count (B,) -> (B, k, m) int64 dense indices, -1 padded.
    """
    users = np.asarray(users, np.int64)
    cand = np.asarray(cand, np.int64)
    out = np.full((users.size, cand.shape[1], m), -1, np.int64)
    if users.size and cand.shape[1] and m > 0:
        kernel = _sample_serial if users.size <= 4 else _sample  # a thread pool costs more than one user
        kernel(R.view(graph), users, cand, np.asarray(count, np.int64), m, out)
    return out


@njit(nogil=True, cache=True)
def _sample_via_friends(g, users, cand, count, m, out):
    for b in range(users.shape[0]):
        u = users[b]
        if u < 0:
            continue
        nu = R.row(g, u)
        for j in range(count[b]):
            c = cand[b, j]
            if c < 0:
                continue
            best = np.full(m, -1, np.int64)
            best_d = np.full(m, np.iinfo(np.int64).max, np.int64)
            for x in range(nu.shape[0]):  # ascending, as the merge-intersect meets them
                v = nu[x]
                fv = R.row(g, v)
                lo = R.lower_bound(fv, 0, fv.shape[0], c)
                if lo == fv.shape[0] or fv[lo] != c:
                    continue
                _keep_least(best, best_d, v, np.int64(fv.shape[0]))
            out[b, j, :] = best


def mutual_sample_via_friends(graph, users, cand, count, m: int = 3) -> np.ndarray:
    """`mutual_sample` from the users' and their friends' lists only (a candidate's own list is not read: its
    mutual friends are the user's friends whose lists hold it), for the ranking tier, which reads no more.

    Shapes: users (B,), cand (B, k) (-1 allowed: empty), count (B,) -> (B, k, m) int64, -1 padded.
    """
    users = np.asarray(users, np.int64)
    cand = np.asarray(cand, np.int64)
    out = np.full((users.size, cand.shape[1], m), -1, np.int64)
    if users.size and cand.shape[1] and m > 0:
        _sample_via_friends(R.view(graph), users, cand, np.asarray(count, np.int64), m, out)
    return out


def format_sample(ids: np.ndarray, sample: np.ndarray) -> list[str]:
    """'id1;id2;id3' per row of (r, m) dense indices (external ids; '' when none)."""
    return [";".join(str(ids[v]) for v in row if v >= 0) for row in sample.tolist()]
