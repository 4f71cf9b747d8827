"""Personalized PageRank from the user: a training-free candidate source that reaches past two hops.

Random walks with restart from u (as Pinterest's Pixie runs them) estimate ppr_u(v), the chance that a
walk which returns to u with probability `alpha` at each step is at v. We compute it deterministically
with the forward-push approximation (Andersen, Chung & Lang 2006): mass moves from a residual r to
the estimate p node by node until every r(v) < eps * deg(v); then |p(v) - ppr_u(v)| <= eps * deg(v),
and the work per user is O(1 / (alpha * eps)) whatever the graph's size.

Candidates are ranked by p(v) / deg(v)^beta: beta = 0 is raw PPR (biased to hubs, which every walk
visits), beta = 1 the degree-normalised score (how much more often a walk from u visits v than a walk
from anywhere, for an undirected graph). Self, friends and blocked users are excluded.
The batch runs users in parallel (numba prange), one workspace per chunk, touched entries reset.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from pymk.candidates.fof import SERIAL_BATCH, _n_chunks, blocked_csr
from pymk.graph import rows as R
from pymk.graph.snapshot import CSRGraph
from pymk.workspace import thread_scratch


@njit(cache=True)
def _push(g, deg, u, alpha, eps, p, r, queued, queue, touched):
    """Forward push from u into p (estimate) and r (residual); returns the number of touched nodes.
    deg: (n,) current degrees (read once per neighbour: cheaper than the row lookup)."""
    n = p.shape[0]
    nt = 0
    r[u] = 1.0
    touched[nt] = u
    nt += 1
    head = 0
    size = 1
    queue[0] = u
    queued[u] = True
    while size > 0:
        v = queue[head]
        head = (head + 1) % n
        size -= 1
        queued[v] = False
        in_arena, s, e = R.span(g, v)
        dv = e - s
        rv = r[v]
        if dv == 0:
            p[v] += rv
            r[v] = 0.0
            continue
        if rv < eps * dv:
            continue
        p[v] += alpha * rv
        r[v] = 0.0
        share = (1.0 - alpha) * rv / dv
        arr = g[3] if in_arena else g[1]
        for j in range(s, e):
            w = arr[j]
            if r[w] == 0.0 and p[w] == 0.0:
                touched[nt] = w
                nt += 1
            r[w] += share
            if not queued[w] and r[w] >= eps * deg[w]:
                queue[(head + size) % n] = w
                size += 1
                queued[w] = True
    return nt


@njit(cache=True)
def _ppr_user(g, deg, u, blocked, k, alpha, eps, beta, p, r, queued, queue, touched, mark,
              out_c, out_s):
    nt = _push(g, deg, u, alpha, eps, p, r, queued, queue, touched)
    fu = R.row(g, u)
    mark[u] = True
    for j in range(fu.shape[0]):
        mark[fu[j]] = True
    for j in range(blocked.shape[0]):
        mark[blocked[j]] = True
    cand = np.empty(nt, np.int64)
    score = np.empty(nt, np.float64)
    m = 0
    for t in range(nt):
        v = touched[t]
        if not mark[v] and p[v] > 0.0:
            cand[m] = v
            dv = max(deg[v], 1)
            score[m] = p[v] / dv ** beta
            m += 1
    # reset the workspace: only what this user touched
    for t in range(nt):
        v = touched[t]
        p[v] = 0.0
        r[v] = 0.0
    mark[u] = False
    for j in range(fu.shape[0]):
        mark[fu[j]] = False
    for j in range(blocked.shape[0]):
        mark[blocked[j]] = False
    cand = cand[:m]
    score = score[:m]
    order = np.argsort(cand)  # ties -> smaller index first, via a stable sort on the ordered list
    cand = cand[order]
    score = score[order]
    order = np.argsort(-score, kind="mergesort")[:k]
    w = order.shape[0]
    out_c[:w] = cand[order]
    out_s[:w] = score[order]
    return w


@njit(cache=True, nogil=True)  # serving threads run it side by side
def _ppr_rows(g, deg, users, blk_ptr, blk_idx, k, alpha, eps, beta, p, r, queued, queue, touched, mark,
              out_c, out_s, out_n, start, step):
    for b in range(start, users.shape[0], step):
        u = users[b]
        if u < 0:
            continue
        out_n[b] = _ppr_user(g, deg, u, blk_idx[blk_ptr[b]:blk_ptr[b + 1]], k, alpha, eps, beta,
                             p, r, queued, queue, touched, mark, out_c[b], out_s[b])


@njit(parallel=True, cache=True)
def _ppr_batch(g, deg, users, blk_ptr, blk_idx, k, alpha, eps, beta, n_chunks, out_c, out_s, out_n):
    n = R.nusers(g)
    for ch in prange(n_chunks):  # strided chunks: one workspace per thread
        _ppr_rows(g, deg, users, blk_ptr, blk_idx, k, alpha, eps, beta, np.zeros(n, np.float64),
                  np.zeros(n, np.float64), np.zeros(n, np.bool_), np.empty(max(n, 1), np.int64),
                  np.empty(max(n, 1), np.int64), np.zeros(n, np.bool_), out_c, out_s, out_n, ch, n_chunks)


def _degrees(graph) -> np.ndarray:
    """(capacity,) int64 degrees the kernel reads: the graph's own array (kept current by a live graph's
    writer), padded to the kernel's index space when a live graph has room for more users."""
    deg = getattr(graph, "kernel_degree", None)
    if deg is not None:
        return deg
    deg = np.asarray(graph.degree)
    cap = R.capacity(graph)
    if deg.dtype != np.int64 or deg.shape[0] < cap:
        full = np.zeros(cap, np.int64)
        full[:deg.shape[0]] = deg
        return full
    return deg


def _thread_workspace(n: int):
    """This thread's push workspace (`pymk.workspace`; the kernel leaves it clean)."""
    return thread_scratch("ppr", n, lambda n: (
        np.zeros(n, np.float64), np.zeros(n, np.float64), np.zeros(n, np.bool_), np.empty(max(n, 1), np.int64),
        np.empty(max(n, 1), np.int64), np.zeros(n, np.bool_)))


def personalized_pagerank(graph: CSRGraph, users, k: int, *, alpha: float = 0.15, eps: float = 1e-5,
                          beta: float = 0.5, blocked=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k non-friends of each user by (approximate) personalized PageRank / degree^beta.

    Args:
        graph: the CSR graph. users: (B,) dense indices (-1: empty row). k: per user.
        alpha: restart probability (higher: closer to the user). eps: push threshold (lower: more
            exact and more work). blocked: optional B arrays of dense indices never to return.
    Returns:
        cand (B, k) int64 (-1 pad), score (B, k) float64 (0 pad), count (B,) int64.
    """
    users = np.asarray(users, np.int64).ravel()
    n = graph.num_users
    k = int(max(0, min(k, n)))
    out_c = np.full((users.size, k), -1, np.int64)
    out_s = np.zeros((users.size, k), np.float64)
    out_n = np.zeros(users.size, np.int64)
    if users.size and users.max() >= n:
        raise IndexError(f"user index {int(users.max())} out of range for {n} users")
    if users.size and k and n:
        blk_ptr, blk_idx = blocked_csr(blocked, users.size, n)
        deg = _degrees(graph)
        if users.size <= SERIAL_BATCH:
            _ppr_rows(R.view(graph), deg, users, blk_ptr, blk_idx, k, float(alpha), float(eps), float(beta),
                      *_thread_workspace(R.capacity(graph)), out_c, out_s, out_n, 0, 1)
            return out_c, out_s, out_n
        _ppr_batch(R.view(graph), deg, users, blk_ptr, blk_idx, k,
                   float(alpha), float(eps), float(beta), _n_chunks(users.size), out_c, out_s, out_n)
    return out_c, out_s, out_n
