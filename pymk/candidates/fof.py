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

from pymk.graph import rows as R
from pymk.graph.sharded import ShardedGraph
from pymk.graph.snapshot import CSRGraph
from pymk.workspace import thread_scratch

SCORES = {"cn": 0, "aa": 1, "ra": 2}


@njit(cache=True)
def _expand_order(g, rows, max_expand):
    """The rows (friends) to expand: all of them, or the `max_expand` of lowest degree (ties: order)."""
    if max_expand <= 0 or rows.shape[0] <= max_expand:
        return rows
    deg = np.empty(rows.shape[0], np.int64)
    for i in range(rows.shape[0]):
        deg[i] = R.deg(g, rows[i])
    order = np.argsort(deg, kind="mergesort")[:max_expand]
    return rows[np.sort(order)]


@njit(cache=True)
def _fof_user(g, u, blocked, k, score_kind, max_expand, ws, out_c, out_cn, out_aa, out_ra):
    """Top-k 2-hop non-friends of u over one graph (`pymk.graph.rows` tuple); see `_fof_core`."""
    friends = R.row(g, u)
    return _fof_core(u, friends, _expand_order(g, friends, max_expand), g, blocked, k,
                     score_kind, ws, out_c, out_cn, out_aa, out_ra)


_EXCLUDED = np.float32(-1.0e30)  # an excluded user's count: stays negative whatever paths reach it
_U32 = 2.0 ** -24  # float32's unit roundoff


@njit(cache=True)
def _fof_core(u, friends, exp_rows, g, blocked, k, score_kind, ws, out_c, out_cn, out_aa, out_ra):
    """Top-k 2-hop non-friends of u into out_*[:k]; returns how many were written.

    friends: u's friends (excluded); exp_rows: rows of g (a `pymk.graph.rows` tuple) whose lists are
    expanded, i.e. the friends' adjacency lists (the whole graph, or the lists a sharded traversal gathered).
    ws: this thread's workspace (`new_workspace`), left as it was found.

    Two passes over the paths u -> v -> c, because the accumulator's random accesses are the cost and
    they are cheap only while it stays in cache (measured: 8-byte rows run ~3x faster than 24-byte ones
    on 1M users):
    1. count and the ordering score in float32 ([count, score] = 8 bytes a user), with no data-dependent
       branch (a first path appends c to `touched` by adding 0/1 to the length; an excluded user
       accumulates into a row that is reset after), so the misses overlap;
    2. the candidates that can be in the top k given float32's error bound (a superset) flagged in a
       bitmap; the paths walked again in the same order, summing cn, aa and ra in float64 for them only.
    So the scores, the order and the ties (smaller index first) are exactly those of float64 sums.
    """
    acc, touched, bits, slot = ws
    _mark(acc, u, friends, blocked, _EXCLUDED)
    nt = 0
    for r in exp_rows:
        lst = R.row(g, r)
        dv = lst.shape[0]
        if dv < 2:
            continue  # v's only friend is u: no 2-hop path through v
        w = np.float32(1.0 if score_kind == 0 else 1.0 / np.log(dv) if score_kind == 1 else 1.0 / dv)
        for j in range(dv):
            c = lst[j]
            cnt = acc[c, 0]
            touched[nt] = c
            nt += cnt == 0.0
            acc[c, 0] = cnt + np.float32(1.0)
            acc[c, 1] += w
    score = np.empty(nt, np.float64)
    for i in range(nt):
        c = touched[i]
        score[i] = acc[c, 1]
        acc[c, 0] = 0.0
        acc[c, 1] = 0.0
    _mark(acc, u, friends, blocked, np.float32(0.0))
    # a float32 sum of m positive terms, each rounded, is within (m + 1) u of the exact sum: keep every
    # candidate whose upper bound reaches the k-th largest lower bound
    delta = 2.0 * (exp_rows.shape[0] + 1) * _U32
    if nt > k:
        thr = np.partition(score, nt - k)[nt - k] * (1.0 - delta) / (1.0 + delta)
        m = 0
        for i in range(nt):
            m += score[i] >= thr
        sel = np.empty(m, np.int64)
        m = 0
        for i in range(nt):
            if score[i] >= thr:
                sel[m] = touched[i]
                m += 1
    else:
        sel = touched[:nt].copy()
    sel.sort()
    for i in range(sel.shape[0]):
        c = sel[i]
        slot[c] = i
        bits[c >> 3] |= np.uint8(1 << (c & 7))
    e_cn = np.zeros(sel.shape[0], np.float64)
    e_aa = np.zeros(sel.shape[0], np.float64)
    e_ra = np.zeros(sel.shape[0], np.float64)
    for r in exp_rows:
        lst = R.row(g, r)
        dv = lst.shape[0]
        if dv < 2:
            continue
        w_aa = 1.0 / np.log(dv)
        w_ra = 1.0 / dv
        for j in range(dv):
            c = lst[j]
            if bits[c >> 3] & (1 << (c & 7)):
                t = slot[c]
                e_cn[t] += 1.0
                e_aa[t] += w_aa
                e_ra[t] += w_ra
    for i in range(sel.shape[0]):
        bits[sel[i] >> 3] = 0
    exact = e_cn if score_kind == 0 else e_aa if score_kind == 1 else e_ra
    order = np.argsort(-exact, kind="mergesort")  # stable over ascending index: ties keep the smaller
    m = min(k, sel.shape[0])
    for i in range(m):
        t = order[i]
        out_c[i] = sel[t]
        out_cn[i] = np.int32(e_cn[t])
        out_aa[i] = e_aa[t]
        out_ra[i] = e_ra[t]
    return m


@njit(cache=True)
def _mark(acc, u, friends, blocked, value):
    """Sets the count of u, its friends and its blocked users to `value` and their score to 0."""
    acc[u, 0] = value
    acc[u, 1] = 0.0
    for j in range(friends.shape[0]):
        acc[friends[j], 0] = value
        acc[friends[j], 1] = 0.0
    for j in range(blocked.shape[0]):
        acc[blocked[j], 0] = value
        acc[blocked[j], 1] = 0.0


@njit(cache=True)
def new_workspace(n):
    """A friends-of-friends workspace for graphs of up to n users, as the kernels leave it.

    acc (n, 2) float32 [count, score], zero; touched (n,) int64 scratch; bits (n / 8,) uint8 bitmap,
    zero; slot (n,) int32 scratch. 20.1 bytes a user.
    """
    return (np.zeros((n, 2), np.float32), np.empty(n, np.int64), np.zeros((n + 7) // 8, np.uint8),
            np.empty(n, np.int32))


@njit(cache=True, nogil=True)  # serving threads run it side by side
def _fof_rows(g, users, blk_ptr, blk_idx, k, score_kind, max_expand, ws,
              out_c, out_cn, out_aa, out_ra, out_n, start, step):
    """Users start, start + step, ... of the batch on one workspace (-1 users get empty rows)."""
    for b in range(start, users.shape[0], step):
        u = users[b]
        if u < 0:
            out_n[b] = 0
            continue
        out_n[b] = _fof_user(g, u, blk_idx[blk_ptr[b]:blk_ptr[b + 1]], k, score_kind,
                             max_expand, ws, out_c[b], out_cn[b], out_aa[b], out_ra[b])


@njit(cache=True, parallel=True)
def _fof_batch(g, users, blk_ptr, blk_idx, k, score_kind, max_expand, n_chunks,
               out_c, out_cn, out_aa, out_ra, out_n):
    n = R.nusers(g)
    for ch in prange(n_chunks):  # strided chunks: one workspace per thread, balanced load
        _fof_rows(g, users, blk_ptr, blk_idx, k, score_kind, max_expand, new_workspace(n),
                  out_c, out_cn, out_aa, out_ra, out_n, ch, n_chunks)


@njit(cache=True, nogil=True)
def _fof_gathered_rows(users, f_ptr, f_idx, needed, mg, blk_ptr, blk_idx, k, score_kind, max_expand,
                       ws, out_c, out_cn, out_aa, out_ra, out_n, start, step):
    """Users start, start + step, ... over lists a sharded traversal gathered (row r of mg is needed[r])."""
    for b in range(start, users.shape[0], step):
        friends = f_idx[f_ptr[b]:f_ptr[b + 1]]
        rows = np.searchsorted(needed, friends)
        out_n[b] = _fof_core(users[b], friends, _expand_order(mg, rows, max_expand), mg,
                             blk_idx[blk_ptr[b]:blk_ptr[b + 1]], k, score_kind, ws,
                             out_c[b], out_cn[b], out_aa[b], out_ra[b])


@njit(cache=True, parallel=True)
def _fof_gathered(users, f_ptr, f_idx, needed, mg, blk_ptr, blk_idx, k, score_kind, max_expand,
                  n, n_chunks, out_c, out_cn, out_aa, out_ra, out_n):
    """`_fof_batch` over lists a sharded traversal gathered: row r of the tuple mg is needed[r]."""
    for ch in prange(n_chunks):
        _fof_gathered_rows(users, f_ptr, f_idx, needed, mg, blk_ptr, blk_idx, k, score_kind, max_expand,
                           new_workspace(n), out_c, out_cn, out_aa, out_ra, out_n, ch, n_chunks)


@njit(cache=True, parallel=True)
def _two_hop_hits(g, users, t_ptr, t_idx, max_expand, n_chunks, hits, sizes):
    """For each user: how many of its truth ids are 2-hop non-friends, and how many 2-hop non-friends."""
    n = R.nusers(g)
    nb = users.shape[0]
    for ch in prange(n_chunks):
        seen = np.zeros(n, np.int64)
        for b in range(ch, nb, n_chunks):
            u = users[b]
            stamp = 2 * b + 1
            seen[u] = stamp + 1  # stamp + 1 marks excluded (self, friends)
            fu = R.row(g, u)
            for j in range(fu.shape[0]):
                seen[fu[j]] = stamp + 1
            s = 0
            for v in _expand_order(g, fu, max_expand):
                fv = R.row(g, v)
                for j in range(fv.shape[0]):
                    c = fv[j]
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
    return max(1, min(batch, get_num_threads()))


def blocked_csr(lists, batch: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user blocked lists (B sequences of dense indices, or None) in CSR form, range-checked.

    Returns: ptr (B + 1,) int64, idx (total,) int64.
    """
    if lists is None:
        return np.zeros(batch + 1, np.int64), np.empty(0, np.int64)
    if len(lists) != batch:
        raise ValueError(f"blocked has {len(lists)} lists for {batch} users")
    arrs = [np.asarray(x if x is not None else [], np.int64).ravel() for x in lists]
    ptr = np.zeros(batch + 1, np.int64)
    np.cumsum([a.size for a in arrs], out=ptr[1:])
    idx = np.concatenate(arrs) if arrs else np.empty(0, np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"blocked index out of range for {n} users")
    return ptr, idx


SERIAL_BATCH = 4  # at most this many users: run on the caller's thread with a reused workspace


def thread_workspace(n: int) -> tuple:
    """This thread's friends-of-friends workspace (`new_workspace`) for graphs of up to n users.

    Serving asks for one user at a time: re-zeroing an O(n) workspace per request would cost more
    than the traversal itself on a large graph.
    """
    return thread_scratch("fof", n, new_workspace)


def friends_of_friends(graph: CSRGraph | ShardedGraph, users, k: int, *, score: str = "aa", blocked=None,
                       max_expand: int = 0) -> FofResult:
    """Top-k friends-of-friends for each user (dense indices; -1 yields an empty row).

    Args:
        graph: the graph: one CSR, or a `ShardedGraph` (same answers, traversal on home shards).
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
    if isinstance(graph, ShardedGraph):
        return _sharded_fof(graph, users, k, SCORES[score], blocked, max_expand)
    if users.size and users.max() >= graph.num_users:
        raise IndexError(f"user index {int(users.max())} out of range for {graph.num_users} users")
    nb = users.size
    k = min(k, graph.num_users)
    blk_ptr, blk_idx = blocked_csr(blocked, nb, graph.num_users)
    out_c = np.full((nb, k), -1, np.int64)
    out_cn = np.zeros((nb, k), np.int32)
    out_aa = np.zeros((nb, k), np.float64)
    out_ra = np.zeros((nb, k), np.float64)
    out_n = np.zeros(nb, np.int64)
    g = R.view(graph)
    if nb and k and nb <= SERIAL_BATCH:
        _fof_rows(g, users, blk_ptr, blk_idx, k, SCORES[score], max_expand,
                  thread_workspace(R.capacity(graph)), out_c, out_cn, out_aa, out_ra, out_n, 0, 1)
    elif nb and k:
        _fof_batch(g, users, blk_ptr, blk_idx, k, SCORES[score], max_expand,
                   _n_chunks(nb), out_c, out_cn, out_aa, out_ra, out_n)
    return FofResult(out_c, out_cn, out_aa, out_ra, out_n)


def _sharded_fof(sg: ShardedGraph, users: np.ndarray, k: int, score_kind: int, blocked,
                 max_expand: int) -> FofResult:
    """Groups users by home shard; each group gathers its lists (local + one request per remote
    shard per batch) and runs the same kernel, so results equal the unsharded engine's."""
    n = sg.num_users
    if users.size and users.max() >= n:
        raise IndexError(f"user index {int(users.max())} out of range for {n} users")
    nb = users.size
    k = min(k, n)
    blk_ptr, blk_idx = blocked_csr(blocked, nb, n)
    out = FofResult(np.full((nb, k), -1, np.int64), np.zeros((nb, k), np.int32), np.zeros((nb, k)),
                    np.zeros((nb, k)), np.zeros(nb, np.int64))
    valid = np.flatnonzero(users >= 0)
    if not (valid.size and k):
        return out
    home = sg.plan.home[users[valid]]
    for s in np.unique(home).tolist():
        group = valid[home == s]
        for i in range(0, group.size, sg.batch):
            sel = group[i:i + sg.batch]
            f_ptr, f_idx, needed, m_ptr, m_idx = sg.gather(s, users[sel])
            sp = np.zeros(sel.size + 1, np.int64)
            np.cumsum(blk_ptr[sel + 1] - blk_ptr[sel], out=sp[1:])
            sidx = np.concatenate([blk_idx[blk_ptr[b]:blk_ptr[b + 1]] for b in sel]) if blk_idx.size else blk_idx
            o = FofResult(np.full((sel.size, k), -1, np.int64), np.zeros((sel.size, k), np.int32),
                          np.zeros((sel.size, k)), np.zeros((sel.size, k)), np.zeros(sel.size, np.int64))
            m_idx = np.asarray(m_idx)
            mg = (np.asarray(m_ptr, np.int64), m_idx, R.readonly(np.zeros(0, np.int64)), m_idx[:0])
            args = (users[sel], f_ptr, np.asarray(f_idx, np.int64), needed, mg, sp, sidx, k, score_kind, max_expand)
            if sel.size <= SERIAL_BATCH:  # a request: this thread's reused workspace, no O(users) zeroing
                ws = thread_workspace(-(-n // 65536) * 65536)  # rounded: joining users rarely resize it
                _fof_gathered_rows(*args, ws, o.cand, o.cn, o.aa, o.ra, o.count, 0, 1)
            else:
                _fof_gathered(*args, n, _n_chunks(sel.size), o.cand, o.cn, o.aa, o.ra, o.count)
            out.cand[sel], out.cn[sel], out.aa[sel], out.ra[sel], out.count[sel] = o.cand, o.cn, o.aa, o.ra, o.count
            sg.traversals += sel.size
    return out


@njit(cache=True)
def _share_a_friend(g, a, b):
    out = np.zeros(a.shape[0], np.bool_)
    for i in range(a.shape[0]):
        ra, rb = R.row(g, a[i]), R.row(g, b[i])
        x, y = 0, 0
        xe, ye = ra.shape[0], rb.shape[0]
        while x < xe and y < ye:  # rows are sorted: merge until a common friend appears
            if ra[x] == rb[y]:
                out[i] = True
                break
            if ra[x] < rb[y]:
                x += 1
            else:
                y += 1
    return out


def within_two_hops(graph: CSRGraph, a, b) -> np.ndarray:
    """Whether each pair (a[i], b[i]) has a common friend. Shapes: (P,), (P,) -> (P,) bool."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    return _share_a_friend(R.view(graph), a, b)


def two_hop_coverage(graph: CSRGraph, users, truth_ptr, truth_idx, *, max_expand: int = 0):
    """Per user: (hits, sizes) = truth ids among the 2-hop non-friends, and the 2-hop set size."""
    users = np.asarray(users, np.int64)
    hits = np.zeros(users.size, np.int64)
    sizes = np.zeros(users.size, np.int64)
    if users.size:
        _two_hop_hits(R.view(graph), users, np.asarray(truth_ptr, np.int64),
                      np.asarray(truth_idx, np.int64), max_expand, _n_chunks(users.size), hits, sizes)
    return hits, sizes


@njit(parallel=True, cache=True)
def _pair_scores(g, users, cand, rows, cols, cn, aa, ra):
    """cn / aa / ra of the (users[rows[i]], cand[rows[i], cols[i]]) pairs, by merging sorted lists."""
    for i in prange(rows.shape[0]):
        ru = R.row(g, users[rows[i]])
        rc = R.row(g, cand[rows[i], cols[i]])
        x = 0
        y = 0
        n_c = 0.0
        s_aa = 0.0
        s_ra = 0.0
        while x < ru.shape[0] and y < rc.shape[0]:
            a = ru[x]
            b = rc[y]
            if a < b:
                x += 1
            elif a > b:
                y += 1
            else:
                d = R.deg(g, a)
                n_c += 1.0
                s_aa += 1.0 / np.log(d)  # d >= 2: a is a friend of both
                s_ra += 1.0 / d
                x += 1
                y += 1
        cn[i] = n_c
        aa[i] = s_aa
        ra[i] = s_ra


def pair_scores(graph: CSRGraph, users: np.ndarray, cand: np.ndarray, mask: np.ndarray):
    """Common neighbours, Adamic-Adar and RA for the slots of `cand` where `mask` is set.

    Shapes: users (B,), cand (B, C), mask (B, C) bool -> three (m,) float64 arrays, row-major order.
    """
    rows, cols = np.nonzero(mask)
    out = [np.zeros(rows.size) for _ in range(3)]
    if rows.size:
        _pair_scores(R.view(graph), np.asarray(users, np.int64),
                     np.asarray(cand, np.int64), rows, cols, *out)
    return out
