"""Friends-of-friends: every 2-hop non-friend of a user with its mutual-friend count, Adamic-Adar and
Resource-Allocation scores, top-K by one of them.

The kernel walks u -> v -> c over the CSR with dense accumulators (touched entries reset after each
user, so a user costs O(2-hop paths), not O(n)). The batch form runs users in parallel (numba
prange), one accumulator workspace per chunk of users.

Scores, for a candidate c of user u with common neighbours N(u) & N(c):
    cn = |N(u) & N(c)|;  aa = sum 1 / log(deg v);  ra = sum 1 / deg v   (v over common neighbours)
Ties break by the smaller dense index (the evaluation protocol's rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import get_num_threads, njit, prange

from pymk.graph.snapshot import CSRGraph

SCORES = {"cn": 0, "aa": 1, "ra": 2}


@njit(cache=True)
def _expand_order(indptr, indices, u, max_expand):
    """The friends of u to expand: all of them, or the `max_expand` of lowest degree (ties: index)."""
    a, b = indptr[u], indptr[u + 1]
    nbrs = indices[a:b]
    if max_expand <= 0 or b - a <= max_expand:
        return nbrs
    deg = np.empty(b - a, np.int64)
    for i in range(b - a):
        v = nbrs[i]
        deg[i] = indptr[v + 1] - indptr[v]
    order = np.argsort(deg, kind="mergesort")[:max_expand]
    return nbrs[np.sort(order)]


@njit(cache=True)
def _fof_user(indptr, indices, u, blocked, k, score_kind, max_expand,
              count, aa, ra, mark, stamp, touched, out_c, out_cn, out_aa, out_ra):
    """Top-k 2-hop non-friends of u into out_*[:k]; returns how many were written.

    count/aa/ra/mark/touched: (n,) workspaces; count/aa/ra must be zero on entry and are left zero.
    """
    mark[u] = stamp
    for j in range(indptr[u], indptr[u + 1]):
        mark[indices[j]] = stamp
    for j in range(blocked.shape[0]):
        mark[blocked[j]] = stamp
    nt = 0
    for v in _expand_order(indptr, indices, u, max_expand):
        dv = indptr[v + 1] - indptr[v]
        if dv < 2:
            continue  # v's only friend is u: no 2-hop path through v
        w_aa = 1.0 / np.log(dv)
        w_ra = 1.0 / dv
        for j in range(indptr[v], indptr[v + 1]):
            c = indices[j]
            if mark[c] == stamp:
                continue
            if count[c] == 0:
                touched[nt] = c
                nt += 1
            count[c] += 1
            aa[c] += w_aa
            ra[c] += w_ra
    cand = np.sort(touched[:nt])
    score = np.empty(nt, np.float64)
    for i in range(nt):
        c = cand[i]
        if score_kind == 0:
            score[i] = count[c]
        elif score_kind == 1:
            score[i] = aa[c]
        else:
            score[i] = ra[c]
    order = np.argsort(-score, kind="mergesort")  # stable: equal scores keep ascending index order
    m = min(k, nt)
    for i in range(m):
        c = cand[order[i]]
        out_c[i] = c
        out_cn[i] = count[c]
        out_aa[i] = aa[c]
        out_ra[i] = ra[c]
    for i in range(nt):
        c = touched[i]
        count[c] = 0
        aa[c] = 0.0
        ra[c] = 0.0
    return m


@njit(cache=True, parallel=True)
def _fof_batch(indptr, indices, users, blk_ptr, blk_idx, k, score_kind, max_expand, n_chunks,
               out_c, out_cn, out_aa, out_ra, out_n):
    n = indptr.shape[0] - 1
    nb = users.shape[0]
    for ch in prange(n_chunks):
        count = np.zeros(n, np.int32)
        aa = np.zeros(n, np.float64)
        ra = np.zeros(n, np.float64)
        mark = np.zeros(n, np.int64)
        touched = np.empty(n, np.int64)
        for b in range(ch * nb // n_chunks, (ch + 1) * nb // n_chunks):
            u = users[b]
            if u < 0:
                out_n[b] = 0
                continue
            out_n[b] = _fof_user(indptr, indices, u, blk_idx[blk_ptr[b]:blk_ptr[b + 1]], k, score_kind,
                                 max_expand, count, aa, ra, mark, b + 1, touched,
                                 out_c[b], out_cn[b], out_aa[b], out_ra[b])


@njit(cache=True, parallel=True)
def _two_hop_hits(indptr, indices, users, t_ptr, t_idx, max_expand, n_chunks, hits, sizes):
    """For each user: how many of its truth ids are 2-hop non-friends, and how many 2-hop non-friends."""
    n = indptr.shape[0] - 1
    nb = users.shape[0]
    for ch in prange(n_chunks):
        seen = np.zeros(n, np.int64)
        for b in range(ch * nb // n_chunks, (ch + 1) * nb // n_chunks):
            u = users[b]
            stamp = 2 * b + 1
            seen[u] = stamp + 1  # stamp + 1 marks excluded (self, friends)
            for j in range(indptr[u], indptr[u + 1]):
                seen[indices[j]] = stamp + 1
            s = 0
            for v in _expand_order(indptr, indices, u, max_expand):
                for j in range(indptr[v], indptr[v + 1]):
                    c = indices[j]
                    if seen[c] != stamp and seen[c] != stamp + 1:
                        seen[c] = stamp
                        s += 1
            sizes[b] = s
            h = 0
            for j in range(t_ptr[b], t_ptr[b + 1]):
                if seen[t_idx[j]] == stamp:
                    h += 1
            hits[b] = h


@dataclass
class FofResult:
    """Top-k friends-of-friends for a batch of users, padded with -1.

    Shapes: cand, cn: (B, k) int64 / int32; aa, ra: (B, k) float64; count: (B,) valid entries per row.
    """

    cand: np.ndarray
    cn: np.ndarray
    aa: np.ndarray
    ra: np.ndarray
    count: np.ndarray


def _n_chunks(batch: int) -> int:
    return max(1, min(batch, get_num_threads() * 4))


def _ragged(lists, batch: int) -> tuple[np.ndarray, np.ndarray]:
    if lists is None:
        return np.zeros(batch + 1, np.int64), np.empty(0, np.int64)
    if len(lists) != batch:
        raise ValueError(f"blocked has {len(lists)} lists for {batch} users")
    arrs = [np.asarray(x if x is not None else [], np.int64).ravel() for x in lists]
    ptr = np.zeros(batch + 1, np.int64)
    np.cumsum([a.size for a in arrs], out=ptr[1:])
    return ptr, (np.concatenate(arrs) if arrs else np.empty(0, np.int64))


def friends_of_friends(graph: CSRGraph, users, k: int, *, score: str = "aa", blocked=None,
                       max_expand: int = 0) -> FofResult:
    """Top-k friends-of-friends for each user (dense indices; -1 yields an empty row).

    Args:
        graph: the train graph.
        users: (B,) dense user indices.
        k: candidates per user.
        score: "cn", "aa" or "ra": the ordering (all three are returned).
        blocked: optional sequence of B arrays of dense indices never to return for that user.
        max_expand: if > 0, expand at most this many friends of a user (those of lowest degree);
            bounds the cost for very high-degree users at some loss of recall (docs/RESULTS.md).
    """
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; choose one of {sorted(SCORES)}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    users = np.asarray(users, np.int64).ravel()
    if users.size and users.max() >= graph.num_users:
        raise IndexError(f"user index {int(users.max())} out of range for {graph.num_users} users")
    nb = users.size
    k = min(k, graph.num_users)
    blk_ptr, blk_idx = _ragged(blocked, nb)
    out_c = np.full((nb, k), -1, np.int64)
    out_cn = np.zeros((nb, k), np.int32)
    out_aa = np.zeros((nb, k), np.float64)
    out_ra = np.zeros((nb, k), np.float64)
    out_n = np.zeros(nb, np.int64)
    if nb and k:
        _fof_batch(graph.indptr, graph.indices, users, blk_ptr, blk_idx, k, SCORES[score], max_expand,
                   _n_chunks(nb), out_c, out_cn, out_aa, out_ra, out_n)
    return FofResult(out_c, out_cn, out_aa, out_ra, out_n)


def two_hop_coverage(graph: CSRGraph, users, truth_ptr, truth_idx, *, max_expand: int = 0):
    """Per user: (hits, sizes) = truth ids among the 2-hop non-friends, and the 2-hop set size."""
    users = np.asarray(users, np.int64)
    hits = np.zeros(users.size, np.int64)
    sizes = np.zeros(users.size, np.int64)
    if users.size:
        _two_hop_hits(graph.indptr, graph.indices, users, np.asarray(truth_ptr, np.int64),
                      np.asarray(truth_idx, np.int64), max_expand, _n_chunks(users.size), hits, sizes)
    return hits, sizes
