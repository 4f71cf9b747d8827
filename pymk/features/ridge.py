"""The `ridge` pair feature: a ridge regression of the user's friend list over its candidate subgraph.

For user u with friends N(u) and Stage-1 candidates C(u), let S = {u} | N(u) | C(u) and A_S the
adjacency matrix induced on S. The feature of candidate c is

    ridge(u, c) = -x[c],   x = (A_S^2 + lambda I)^-1 A_S e_u,

which is EASE (Steck 2019: item-item ridge regression, closed form B = I - P / diag(P) with
P = (A^T A + lambda I)^-1) scored for u, with the per-candidate 1 / P_cc scale dropped and the graph cut
down to u's own candidate subgraph. Why it carries what CN / AA / RA / paths / PPR do not: expanding the
inverse, -x[c] ~ (A^3)_uc / lambda^2 - (A^5)_uc / lambda^3 + ..., i.e. 3-edge paths with the dominant,
popularity-like directions of the graph shrunk (the filter x / (x^2 + lambda) peaks at eigenvalue
sqrt(lambda) and decays as 1 / x above it) instead of amplified as in raw path counts.
Measured (docs/RESULTS.md, benchmarks/scorer_survey.py): EASE over the whole graph is weaker than RA
alone, but as a ranker feature it added about 1.5 points of recall@20 on both shared graphs, and the
candidate-subgraph version matches the whole-graph one (0.7426 vs 0.7441 on ego-facebook).
Cost: building A_S reads the adjacency lists of S once (what `paths3` reads too), then `ITERATIONS`
conjugate-gradient steps of two sparse products over A_S.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from pymk.graph import rows as R
from pymk.workspace import thread_scratch

LAMBDA = 50.0  # best of 10 / 50 / 200 / 1000 for whole-graph EASE on both shared graphs (scorer_survey)
ITERATIONS = 20  # conjugate-gradient steps (10 measured as good as 30 on ego-facebook)
TOLERANCE = 1e-4  # ... or until the residual is this small relative to the right-hand side


@njit(cache=True, nogil=True)
def _spmv(lptr, lidx, x, out):
    for a in range(lptr.shape[0] - 1):
        s = 0.0
        for i in range(lptr[a], lptr[a + 1]):
            s += x[lidx[i]]
        out[a] = s


@njit(cache=True, nogil=True)
def _ridge_user(g, u, cand_row, count, lam, iters, tol, out_row, mark):
    """out_row[j] = ridge(u, cand_row[j]) for j < count. mark (n,) int32 is -1 on entry and left -1."""
    fu = R.row(g, u)
    du = fu.shape[0]
    nodes = np.empty(1 + du + count, np.int64)
    mark[u] = 0
    nodes[0] = u
    k = 1
    for i in range(du):
        v = fu[i]
        if mark[v] < 0:
            mark[v] = k
            nodes[k] = v
            k += 1
    for j in range(count):
        c = cand_row[j]
        if c >= 0 and mark[c] < 0:
            mark[c] = k
            nodes[k] = c
            k += 1
    # A_S as local CSR in one pass; lidx is sized for every entry of S's lists, but only the kept ones are
    # written (np.empty: untouched pages are never faulted in)
    total = 0
    for a in range(k):
        total += R.deg(g, nodes[a])
    lptr = np.zeros(k + 1, np.int64)
    lidx = np.empty(total, np.int32)
    kept = 0
    for a in range(k):
        v = nodes[a]
        fv = R.row(g, v)
        for i in range(fv.shape[0]):
            w = mark[fv[i]]
            if w >= 0:
                lidx[kept] = w
                kept += 1
        lptr[a + 1] = kept
    # conjugate gradients on (A_S^2 + lam I) x = A_S e_u (symmetric positive definite)
    b = np.zeros(k)
    for i in range(lptr[0], lptr[1]):
        b[lidx[i]] = 1.0
    x = np.zeros(k)
    r = b.copy()
    p = b.copy()
    t = np.empty(k)
    q = np.empty(k)
    rs = r @ r
    stop = tol * tol * rs
    for _ in range(iters):
        if rs <= stop:
            break
        _spmv(lptr, lidx, p, t)
        _spmv(lptr, lidx, t, q)
        q += lam * p
        alpha = rs / (p @ q)
        x += alpha * p
        r -= alpha * q
        rs_new = r @ r
        p = r + (rs_new / rs) * p
        rs = rs_new
    for j in range(count):
        c = cand_row[j]
        out_row[j] = -x[mark[c]] if c >= 0 else 0.0
    for a in range(k):
        mark[nodes[a]] = -1


@njit(cache=True, nogil=True)  # serving threads run it side by side
def _ridge_serial(g, users, cand, count, lam, iters, tol, out, mark):
    for b in range(users.shape[0]):
        if users[b] >= 0 and count[b] > 0:
            _ridge_user(g, users[b], cand[b], count[b], lam, iters, tol, out[b], mark)


@njit(parallel=True, cache=True)
def _ridge_parallel(g, users, cand, count, lam, iters, tol, out):
    n = R.nusers(g)
    nb = users.shape[0]
    n_chunks = min(nb, 64)
    for ch in prange(n_chunks):  # one O(n) marker per chunk of users
        mark = np.full(n, -1, np.int32)
        for b in range(ch, nb, n_chunks):
            if users[b] >= 0 and count[b] > 0:
                _ridge_user(g, users[b], cand[b], count[b], lam, iters, tol, out[b], mark)


def _marker(n: int) -> np.ndarray:
    return thread_scratch("ridge_mark", n, lambda n: np.full(n, -1, np.int32))


def subgraph_ridge(graph, users: np.ndarray, cand: np.ndarray, count: np.ndarray, *, lam: float = LAMBDA,
                   iters: int = ITERATIONS, tol: float = TOLERANCE) -> np.ndarray:
    """ridge(u, c) for every (user, candidate) slot; padding slots 0.

    Shapes: users (B,), cand (B, C) with -1 padding, count (B,) -> (B, C) float64.
    A few users (the serving path) run on this thread's reused marker, as `paths3` does.
    """
    from pymk.candidates.fof import SERIAL_BATCH

    out = np.zeros(cand.shape, np.float64)
    args = (R.view(graph), users.astype(np.int64), cand.astype(np.int64), count.astype(np.int64), float(lam),
            int(iters), float(tol), out)
    if users.shape[0] <= SERIAL_BATCH:
        _ridge_serial(*args, _marker(R.capacity(graph)))
    else:
        _ridge_parallel(*args)
    return out
