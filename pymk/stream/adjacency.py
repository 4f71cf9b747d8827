"""A graph that takes new friendships: the snapshot's CSR plus the edges added since, per user."""

from __future__ import annotations

import time

import numpy as np
from numba import njit

from pymk.graph.shard_store import gather_rows
from pymk.graph.snapshot import CSRGraph


class LiveAdjacency:
    """The snapshot's adjacency lists plus friendships added since, without rewriting the CSR.

    Args:
        graph: the snapshot (memory-mapped is fine: it is only read).
    """

    def __init__(self, graph: CSRGraph):
        self.graph = graph
        self.degree = np.array(graph.degree, np.int64)  # writable copy, kept current
        self.extra: dict[int, list[int]] = {}
        self.extra_ts: dict[int, list[int]] = {}  # when each added friendship was made (unix seconds)
        self.has_extra = np.zeros(graph.num_users, bool)
        self.added = 0

    @property
    def num_users(self) -> int:
        return self.graph.num_users

    def has_edge(self, a: int, b: int) -> bool:
        row = self.graph.neighbors(a)
        return bool(np.any(row == b)) or b in self.extra.get(a, ())

    def add(self, lo: np.ndarray, hi: np.ndarray, ts=None) -> tuple[np.ndarray, np.ndarray]:
        """Adds friendships made at `ts` (unix seconds; default now); returns the ones that were new (no
        self-loops, repeats or known edges).

        Raises IndexError for an index outside the graph (new users need a rebuild: the model has no
        id embedding for them). Shapes: lo, hi, ts (e,) dense indices -> (new,), (new,).
        """
        lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
        ts = np.broadcast_to(np.asarray(time.time() if ts is None else ts, np.float64), lo.shape).astype(np.int64)
        n = self.num_users
        bad = (lo < 0) | (lo >= n) | (hi < 0) | (hi >= n)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise IndexError(f"edge {int(lo[i])}-{int(hi[i])}: user index outside the graph's {n} users")
        new_lo, new_hi = [], []
        for a, b, t in zip(lo.tolist(), hi.tolist(), ts.tolist(), strict=True):
            if a == b or self.has_edge(a, b):
                continue
            self.extra.setdefault(a, []).append(b)
            self.extra.setdefault(b, []).append(a)
            self.extra_ts.setdefault(a, []).append(t)
            self.extra_ts.setdefault(b, []).append(t)
            self.has_extra[[a, b]] = True
            self.degree[a] += 1
            self.degree[b] += 1
            new_lo.append(a)
            new_hi.append(b)
        self.added += len(new_lo)
        return np.array(new_lo, np.int64), np.array(new_hi, np.int64)

    def rows(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The current adjacency lists of `nodes` as a CSR. Shapes: nodes (r,) -> ptr (r + 1,), idx (sum,)."""
        nodes = np.asarray(nodes, np.int64)
        ptr, idx = gather_rows(np.asarray(self.graph.indptr), np.asarray(self.graph.indices), nodes)
        if not self.extra:
            return ptr, idx.astype(np.int64)
        base = np.diff(ptr)
        sel = np.flatnonzero(self.has_extra[nodes])  # the few users with additions
        lens = base.copy()
        lens[sel] += np.fromiter((len(self.extra[u]) for u in nodes[sel].tolist()), np.int64, sel.size)
        out_ptr = np.zeros(nodes.size + 1, np.int64)
        np.cumsum(lens, out=out_ptr[1:])
        out = np.empty(int(out_ptr[-1]), np.int64)
        out[np.repeat(out_ptr[:-1] - ptr[:-1], base) + np.arange(idx.size)] = idx
        for i in sel.tolist():
            out[out_ptr[i] + base[i]:out_ptr[i + 1]] = self.extra[int(nodes[i])]
        return out_ptr, out

    def ball(self, seeds: np.ndarray, radius: int) -> np.ndarray:
        """Users within `radius` hops of `seeds` (seeds included), sorted. Shapes: (s,) -> (m,)."""
        ball = np.unique(np.asarray(seeds, np.int64))
        frontier = ball
        for _ in range(radius):
            _, idx = self.rows(frontier)
            nxt = np.setdiff1d(np.unique(idx), ball, assume_unique=True)
            if not nxt.size:
                break
            ball = np.union1d(ball, nxt)
            frontier = nxt
        return ball

    def to_graph(self) -> CSRGraph:
        """The current graph as a new in-memory CSR snapshot (same ids; timestamps kept where the snapshot
        has them, added friendships at their event time). O(edges)."""
        g = self.graph
        base_ptr, base_idx = np.asarray(g.indptr), np.asarray(g.indices)
        lens = np.diff(base_ptr)
        users = np.array(sorted(self.extra), np.int64)
        lens[users] += np.fromiter((len(self.extra[u]) for u in users.tolist()), np.int64, users.size)
        ptr = np.zeros(self.num_users + 1, np.int64)
        np.cumsum(lens, out=ptr[1:])
        idx = np.empty(int(ptr[-1]), base_idx.dtype)
        _copy_rows(base_ptr, base_idx, ptr, idx)
        ts = None
        if g.ts is not None:
            ts = np.empty(idx.size, np.int64)
            _copy_rows(base_ptr, np.asarray(g.ts), ptr, ts)
        for u in users.tolist():  # the added friendships go after each user's snapshot list
            at = ptr[u] + base_ptr[u + 1] - base_ptr[u]
            idx[at:ptr[u + 1]] = self.extra[u]
            if ts is not None:
                ts[at:ptr[u + 1]] = self.extra_ts[u]
        return CSRGraph(ptr, idx, g.ids, ts, dict(g.meta))


@njit(cache=True)
def _copy_rows(src_ptr, src, dst_ptr, dst):
    """Each row of a CSR to the start of its (longer or equal) row in another."""
    for u in range(src_ptr.shape[0] - 1):
        a, b = src_ptr[u], src_ptr[u + 1]
        dst[dst_ptr[u]:dst_ptr[u] + b - a] = src[a:b]
