"""Mini-batch neighbour sampling over the CSR (PyG's NeighborLoader cannot run here: no pyg-lib).

For B seed nodes and fan-outs [K1, K2, ...]: each seed gets up to K1 distinct neighbours sampled
without replacement, each newly reached node up to K2 of its own, and so on. Nodes are de-duplicated
across hops, so a batch holds at most B * (1 + K1 + K1 K2 + ...) nodes (28,416 for 256, [10, 10]).
Edges whose both ends are in `exclude` (a batch's positive training edges) are never sampled, so a
link-prediction batch cannot read its own labels through message passing.

The kernel is numba with a seeded xorshift stream (`pymk.gnn.rng`) per (batch seed, node): the
same seed gives the same batch, and a node's sample does not depend on the rest of its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from pymk.gnn.rng import mix64 as _mix
from pymk.gnn.rng import next_u64 as _next
from pymk.graph.snapshot import CSRGraph


@dataclass
class SamplerOutput:
    """A sampled subgraph in the form PyG layers consume.

    Shapes:
        node: (N,) global indices; node[:num_sampled_nodes[0]] are the seeds, in input order.
        row, col: (E,) local indices; edge e carries a message row[e] -> col[e] (neighbour -> node),
            i.e. `edge_index = [row, col]`.
        num_sampled_nodes: nodes added per hop (hop 0 = seeds); num_sampled_edges: edges per hop.
    """

    node: np.ndarray
    row: np.ndarray
    col: np.ndarray
    num_sampled_nodes: list[int]
    num_sampled_edges: list[int]

    def edge_index(self):
        import torch

        return torch.from_numpy(np.stack([self.row, self.col]))


@njit(cache=True)
def _is_excluded(excl, key):
    k = np.searchsorted(excl, key)
    return k < excl.shape[0] and excl[k] == key


@njit(cache=True)
def _sample(indptr, indices, seeds, fanouts, rng_seed, excl, excl_nodes, local, max_nodes, max_edges):
    n = indptr.shape[0] - 1
    state = np.empty(1, np.uint64)
    nodes = np.empty(max_nodes, np.int64)
    row = np.empty(max_edges, np.int64)
    col = np.empty(max_edges, np.int64)
    hop_nodes = np.zeros(fanouts.shape[0] + 1, np.int64)
    hop_edges = np.zeros(fanouts.shape[0], np.int64)
    nn = 0
    for i in range(seeds.shape[0]):
        s = seeds[i]
        if local[s] < 0:
            local[s] = nn
            nodes[nn] = s
            nn += 1
    hop_nodes[0] = nn
    ne = 0
    lo, hi = 0, nn
    chosen = np.empty(0, np.int64)
    filt = np.empty(0, indices.dtype)
    for h in range(fanouts.shape[0]):
        k = fanouts[h]
        e0 = ne
        for t in range(lo, hi):
            x = nodes[t]
            a = indptr[x]
            d = indptr[x + 1] - a
            src_arr = indices[a:a + d]
            if _is_excluded(excl_nodes, x):  # only this node's label edges are filtered out
                if filt.shape[0] < d:
                    filt = np.empty(d, indices.dtype)
                m = 0
                for j in range(d):
                    y = src_arr[j]
                    if not _is_excluded(excl, x * n + y):
                        filt[m] = y
                        m += 1
                cand = filt[:m]
            else:
                cand = src_arr
            d = cand.shape[0]
            take = min(k, d)
            # a stream per (batch seed, node): a node's neighbours do not depend on which other nodes
            # share its batch, so splitting a batch across data-parallel workers samples the same
            state[0] = _mix(np.uint64(rng_seed) ^ (np.uint64(x) * np.uint64(0x9E3779B97F4A7C15)))
            if chosen.shape[0] < take:
                chosen = np.empty(take, np.int64)
            if take == d:
                for j in range(d):
                    chosen[j] = j
            else:
                # Floyd's algorithm: `take` distinct positions of range(d), O(take^2) for small take
                c = 0
                for r in range(d - take, d):
                    p = np.int64(_next(state) % np.uint64(r + 1))
                    dup = False
                    for q in range(c):
                        if chosen[q] == p:
                            dup = True
                            break
                    chosen[c] = r if dup else p
                    c += 1
            for j in range(take):
                y = cand[chosen[j]]
                if local[y] < 0:
                    local[y] = nn
                    nodes[nn] = y
                    nn += 1
                row[ne] = local[y]
                col[ne] = local[x]
                ne += 1
        hop_edges[h] = ne - e0
        lo, hi = hi, nn
        hop_nodes[h + 1] = nn - lo
    for i in range(nn):
        local[nodes[i]] = -1
    return nodes[:nn].copy(), row[:ne].copy(), col[:ne].copy(), hop_nodes, hop_edges


class NeighborSampler:
    """Samples PyG-ready subgraphs from a `CSRGraph`; not thread-safe (one reusable workspace).

    Args:
        graph: the message-passing graph.
        fanouts: neighbours per hop, e.g. [10, 10].
    """

    def __init__(self, graph: CSRGraph, fanouts=(10, 10)):
        if not fanouts or min(fanouts) < 1:
            raise ValueError(f"fanouts must be positive, got {list(fanouts)}")
        self.graph = graph
        self.fanouts = np.asarray(fanouts, np.int64)
        self._local = np.full(graph.num_users, -1, np.int64)

    def max_nodes(self, batch: int) -> int:
        """B * (1 + K1 + K1 K2 + ...): the most nodes a batch of `batch` seeds can hold."""
        return int(batch * (1 + np.cumprod(self.fanouts).sum()))

    def sample(self, seeds, *, seed: int = 0, exclude: tuple[np.ndarray, np.ndarray] | None = None
               ) -> SamplerOutput:
        """Samples around `seeds` (dense indices, de-duplicated keeping first occurrences).

        Args:
            seeds: (B,) dense indices.
            seed: random seed of this batch.
            exclude: (src, dst) edges never to sample, in either direction (a batch's positives).
        """
        seeds = np.asarray(seeds, np.int64).ravel()
        _, first = np.unique(seeds, return_index=True)
        seeds = seeds[np.sort(first)]
        n = self.graph.num_users
        if exclude is not None and len(exclude[0]):
            a, b = np.asarray(exclude[0], np.int64), np.asarray(exclude[1], np.int64)
            excl = np.unique(np.concatenate([a * n + b, b * n + a]))
            excl_nodes = np.unique(np.concatenate([a, b]))
        else:
            excl = excl_nodes = np.empty(0, np.int64)
        max_nodes = self.max_nodes(seeds.size)
        node, row, col, hn, he = _sample(self.graph.indptr, self.graph.indices, seeds, self.fanouts, seed,
                                         excl, excl_nodes, self._local, max_nodes, max_nodes)
        return SamplerOutput(node, row, col, hn.tolist(), he.tolist())
