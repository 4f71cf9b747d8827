"""Forward push over the lists one process holds: personalized PageRank spread over shard servers.

The single-process PPR (`pymk.candidates.ppr`) pushes from a queue over the whole graph. When the lists are
spread over shard servers, no process can: the residual mass is kept as entries (query, user, mass), and
each process pushes the entries on users whose lists it holds, in vectorised rounds, until what is left
lies on users it does not hold or is below the threshold. The ranking tier does this with the lists it
read for the request (the user's and its friends'), each shard server with its shard's, and the tier sends
what is left to the users' home shards, one parallel round at a time (`pymk.serving.tier.distributed_ppr`).
Every push keeps the invariant p + PPR(r) = ppr exactly, so when every residual is below eps * degree the
estimate has the single-process guarantee |p(v) - ppr(v)| <= eps * deg(v), whatever the push order.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pymk.graph import rows as R
from pymk.workspace import thread_scratch

NODE_BITS = 40  # an entry's key: query << 40 | user (users below 2**40, queries below 2**23)


def entry_key(query: np.ndarray, node: np.ndarray) -> np.ndarray:
    return (np.asarray(query, np.int64) << NODE_BITS) | np.asarray(node, np.int64)


def split_key(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return key >> NODE_BITS, key & ((1 << NODE_BITS) - 1)


def sum_entries(key: np.ndarray, val: np.ndarray, deg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries summed per key, sorted by key; a known degree wins over an unknown one (-1)."""
    if not key.size:
        return key, val, deg
    order = np.argsort(key, kind="stable")
    key, val, deg = key[order], val[order], deg[order]
    first = np.ones(key.size, bool)
    first[1:] = key[1:] != key[:-1]
    at = np.flatnonzero(first)
    return key[at], np.add.reduceat(val, at), np.maximum.reduceat(deg, at)


LUT_SHIFT = 8  # `_find` searches one bucket of 256 consecutive user indices, not every held user


def bucket_starts(ids_sorted: np.ndarray) -> np.ndarray:
    """(b + 1,) int64: where each bucket of 256 user indices starts in `ids_sorted`."""
    top = int(ids_sorted[-1]) if ids_sorted.size else 0
    edges = np.arange(0, (top >> LUT_SHIFT) + 2, dtype=np.int64) << LUT_SHIFT
    return np.searchsorted(ids_sorted, edges).astype(np.int64)


@njit(cache=True)
def _find(ids_sorted, rows_sorted, lut, x):
    """Local row of global user x, or -1 (binary search within x's bucket of the held users' sorted ids)."""
    b = x >> LUT_SHIFT
    if b + 1 < lut.shape[0]:
        lo, hi = lut[b], lut[b + 1]
    else:
        lo, hi = lut[lut.shape[0] - 1], ids_sorted.shape[0]
    lo = R.lower_bound(ids_sorted, lo, hi, x)
    if lo < ids_sorted.shape[0] and ids_sorted[lo] == x:
        return rows_sorted[lo]
    return -1


@njit(cache=True)
def _push_query(g, held, ids, ids_sorted, rows_sorted, lut, local, rows0, val0, alpha, eps, p, r, queued, queue,
                touched):
    """FIFO forward push of one query's residual (val0 at local rows rows0, all held) over the held rows.
    `local`: the lists' entries are local rows (a request graph), else global users (a shard).

    Mass that reaches a user held here joins its residual; mass for any other user goes to the outbox.
    p, r (h,) float64 and queued (h,) bool are zero on entry and left so by the caller (`touched`).
    Returns (touched count, outbox users (o,) global, outbox mass (o,)).
    """
    h = p.shape[0]
    nt = 0
    size = 0
    head = 0
    cap = 64
    out_w = np.empty(cap, np.int64)
    out_v = np.empty(cap, np.float64)
    no = 0
    for i in range(rows0.shape[0]):
        v = rows0[i]
        if r[v] == 0.0 and p[v] == 0.0:
            touched[nt] = v
            nt += 1
        r[v] += val0[i]
        if not queued[v]:
            queue[(head + size) % h] = v
            size += 1
            queued[v] = True
    while size > 0:
        v = queue[head]
        head = (head + 1) % h
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
            if local:
                w = np.int64(arr[j])
                x = ids[w]
            else:
                x = np.int64(arr[j])
                w = _find(ids_sorted, rows_sorted, lut, x)
            if w < 0 or not held[w]:
                if no == cap:
                    cap *= 2
                    grown_w = np.empty(cap, np.int64)
                    grown_v = np.empty(cap, np.float64)
                    grown_w[:no] = out_w[:no]
                    grown_v[:no] = out_v[:no]
                    out_w, out_v = grown_w, grown_v
                out_w[no] = x
                out_v[no] = share
                no += 1
                continue
            if r[w] == 0.0 and p[w] == 0.0:
                touched[nt] = w
                nt += 1
            r[w] += share
            if not queued[w] and r[w] >= eps * R.deg(g, w):
                queue[(head + size) % h] = w
                size += 1
                queued[w] = True
    return nt, out_w[:no], out_v[:no]


class HeldLists:
    """The lists one process holds, as the push kernel reads them.

    Args:
        graph: a CSRGraph or LiveGraph over local rows whose entries are global user indices (a shard), or
            local rows (`local`: a request graph).
        ids: (h,) global index of each local row. held: (h,) bool, rows whose lists are here (default all).
        scratch: name of this thread's reused workspace (a long-lived holder); None: fresh arrays per call.
    """

    def __init__(self, graph, ids: np.ndarray, held: np.ndarray | None = None, *, local: bool = False,
                 scratch: str | None = None):
        self.graph = graph
        self.local = local  # entries of the lists are local rows (a `RequestGraph`'s csr), not global users
        self.scratch = scratch  # reuse this thread's workspace under this name (a server); None: fresh arrays
        ids = np.asarray(ids, np.int64)
        self.ids = ids
        order = np.argsort(ids, kind="stable")
        self.ids_sorted, self.rows_sorted = ids[order], order.astype(np.int64)
        self.lut = bucket_starts(self.ids_sorted)
        self.held = np.ones(ids.size, bool) if held is None else np.asarray(held, bool)

    def push(self, key, val, deg=None, *, alpha: float, eps: float, aggregate: bool = True):
        """Pushes entries (key, val) on held users here, FIFO, until the mass left is on users held elsewhere or
        below eps * degree. `deg`: degrees known of the entries' users (-1: unknown), kept for users elsewhere.
        Returns pushed (key, gain, deg) and rest (key, val, deg; -1 for users elsewhere not known); a key may
        repeat in `pushed`, and in `rest` unless `aggregate` (a server leaves the summing to the tier)."""
        key = np.asarray(key, np.int64)
        val = np.asarray(val, np.float64)
        q, node = split_key(key)
        if self.ids_sorted.size:
            pos = np.minimum(np.searchsorted(self.ids_sorted, node), self.ids_sorted.size - 1)
            row = np.where(self.ids_sorted[pos] == node, self.rows_sorted[pos], -1)
        else:
            row = np.full(node.size, -1, np.int64)
        here = row >= 0
        here[here] = self.held[row[here]]
        g = R.view(self.graph)
        n = R.capacity(self.graph)
        make = lambda n: (np.zeros(n), np.zeros(n), np.zeros(n, np.bool_), np.empty(max(n, 1), np.int64),  # noqa: E731
                          np.empty(max(n, 1), np.int64))
        p, r, queued, queue, touched = thread_scratch(self.scratch, n, make) if self.scratch else make(n)
        deg = np.full(key.size, -1, np.int64) if deg is None else np.asarray(deg, np.int64)
        pushed, rest = [], [(key[~here], val[~here], deg[~here])]
        for b in np.unique(q[here]).tolist():
            sel = here & (q == b)
            nt, out_w, out_v = _push_query(g, self.held, self.ids, self.ids_sorted, self.rows_sorted, self.lut,
                                           self.local,
                                           row[sel], val[sel], float(alpha), float(eps), p, r, queued, queue,
                                           touched)
            harvest = _harvest(g, self.ids, touched, nt, p, r, queued, np.int64(b))
            pushed.append(harvest[:3])
            rest.append(harvest[3:])
            rest.append(((np.int64(b) << NODE_BITS) | out_w, out_v, np.full(out_w.size, -1, np.int64)))
        empty = (np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64))
        pushed = tuple(np.concatenate([x[i] for x in pushed]) for i in range(3)) if pushed else empty
        rest = tuple(np.concatenate([x[i] for x in rest]) for i in range(3))
        return pushed, (sum_entries(*rest) if aggregate else rest)


@njit(cache=True)
def _harvest(g, ids, touched, nt, p, r, queued, b):
    """One query's estimate gains and residuals on the touched rows, as entries (key, value, degree), and the
    workspace left clean. Returns (gain keys, gains, degrees, residual keys, residuals, degrees)."""
    np_, nr = 0, 0
    for i in range(nt):
        t = touched[i]
        np_ += p[t] > 0.0
        nr += r[t] > 0.0
    pk, pv, pd = np.empty(np_, np.int64), np.empty(np_), np.empty(np_, np.int64)
    rk, rv, rd = np.empty(nr, np.int64), np.empty(nr), np.empty(nr, np.int64)
    a, c = 0, 0
    for i in range(nt):
        t = touched[i]
        key = (b << NODE_BITS) | ids[t]
        d = R.deg(g, t)
        if p[t] > 0.0:
            pk[a], pv[a], pd[a] = key, p[t], d
            a += 1
        if r[t] > 0.0:
            rk[c], rv[c], rd[c] = key, r[t], d
            c += 1
        p[t] = 0.0
        r[t] = 0.0
        queued[t] = False
    return pk, pv, pd, rk, rv, rd
