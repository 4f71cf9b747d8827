"""A graph that takes new friendships: the snapshot's CSR plus the edges added since, per user."""

from __future__ import annotations

import numpy as np

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
        self.has_extra = np.zeros(graph.num_users, bool)
        self.added = 0

    @property
    def num_users(self) -> int:
        return self.graph.num_users

    def has_edge(self, a: int, b: int) -> bool:
        row = self.graph.neighbors(a)
        return bool(np.any(row == b)) or b in self.extra.get(a, ())

    def add(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Adds friendships; returns the ones that were new (no self-loops, repeats or known edges).

        Raises IndexError for an index outside the graph (new users need a rebuild: the model has no
        id embedding for them). Shapes: lo, hi (e,) dense indices -> (new,), (new,).
        """
        lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
        n = self.num_users
        bad = (lo < 0) | (lo >= n) | (hi < 0) | (hi >= n)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise IndexError(f"edge {int(lo[i])}-{int(hi[i])}: user index outside the graph's {n} users")
        new_lo, new_hi = [], []
        for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
            if a == b or self.has_edge(a, b):
                continue
            self.extra.setdefault(a, []).append(b)
            self.extra.setdefault(b, []).append(a)
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
        """The current graph as a CSR snapshot (same ids). O(edges): for checks and compaction."""
        ptr, idx = self.rows(np.arange(self.num_users))
        return CSRGraph(ptr, idx.astype(np.asarray(self.graph.indices).dtype), self.graph.ids, None,
                        dict(self.graph.meta))
