"""Streaming embedding refresh: a new friendship A-B recomputes the embeddings it changes, in milliseconds.

A GNN of L layers computes user v's embedding from its L-hop neighbourhood. When A-B arrives:
- layer 0 (inputs) changes for A and B only (their degree feature);
- layer i's output changes exactly for the users within i hops of A or B (C_i = N[C_{i-1}]);
so keeping every hidden layer's output for every user (`states`), a refresh recomputes layer i only
for C_i, reading the cached outputs of everyone else, and gets the same numbers as full inference over
the new graph. The final layer is recomputed for the users within `radius` hops of A and B; the brief's
policy (A, B and their 1-hop neighbours) is radius 1, and radius L makes every embedding exact. Users
further out keep an embedding that lags by one neighbour's change until the next batch refresh
(the staleness tracker decides who needs one).

Degree inputs are standardised with the snapshot's statistics (frozen), so a refresh and a full
inference over the new graph with those statistics agree to float rounding.

A refresh reads the adjacency lists of the users it recomputes; when a micro-batch touches so much of
the graph (hubs, big batches) that this passes `full_share` of what full inference reads, it recomputes
every hidden state over the whole graph instead: the cost of a batch is bounded by one full pass, so
throughput grows with the batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from pymk.gnn.model import LinkEncoder, degree_stats, input_features, neighbour_mean, structural_features
from pymk.stream.adjacency import LiveAdjacency


@dataclass
class Refresh:
    """What one refresh changed. Shapes: users (r,) sorted dense indices, vectors (r, d) float32;
    ends (e,) the new friendships' endpoints, sorted."""

    users: np.ndarray
    vectors: np.ndarray
    new_edges: int
    seconds: float
    ends: np.ndarray


class GraphOnly:
    """The refresher of a model without embeddings: the friendships join the live graph, nothing else."""

    def __init__(self, adjacency: LiveAdjacency):
        self.adj = adjacency
        self.emb = None

    def apply(self, lo: np.ndarray, hi: np.ndarray, ts=None) -> Refresh:
        t0 = time.perf_counter()
        lo, hi = self.adj.add(lo, hi, ts)
        return self.refresh(np.unique(np.concatenate([lo, hi])), int(lo.size), t0)

    def refresh(self, ends: np.ndarray, new_edges: int = 0, t0: float | None = None) -> Refresh:
        """Nothing to recompute: reports the changed users `ends`."""
        t0 = time.perf_counter() if t0 is None else t0
        return Refresh(np.empty(0, np.int64), np.empty((0, 0), np.float32), new_edges,
                       time.perf_counter() - t0, np.asarray(ends, np.int64))


class EmbeddingRefresher:
    """Keeps a model's embeddings current as friendships arrive.

    Args:
        model: the trained encoder (its id embedding covers every user of `adjacency`).
        adjacency: the live graph; `apply` adds the new edges to it.
        radius: final-layer refresh radius around the new edges' endpoints (0 .. layers).
        emb: (n, d) current embeddings to update in place (default: full inference now).
        states: hidden layers' outputs [h_1 .. h_{L-1}], each (n, d) (default: full inference now).
        stats: (mean, std) the degree input is standardised with (default: the snapshot's).
        full_share: run full inference when a refresh would read more than this share of the adjacency
            entries full inference reads.
    """

    def __init__(self, model: LinkEncoder, adjacency: LiveAdjacency, *, radius: int = 1,
                 emb: np.ndarray | None = None, states: list[np.ndarray] | None = None,
                 stats: tuple[float, float] | None = None, full_share: float = 0.5):
        from pymk.gnn.train import infer

        layers = len(model.convs)
        if not 0 <= radius <= layers:
            raise ValueError(f"refresh radius must be in 0..{layers} (the model's layers), got {radius}")
        self.model = model.eval()
        self.adj = adjacency
        self.limit = int(model.emb.num_embeddings)  # users with an id embedding (who joined since have none yet)
        self.radius = radius
        self.full_share = full_share
        self.full_passes = 0
        self.stats = stats or degree_stats(adjacency.graph.degree)
        self.struct = input_features(adjacency.graph, model.config)[:self.limit]
        self.struct[:, 0] = structural_features(adjacency.degree[:self.limit], self.stats)[:, 0]
        # mean-aggregating layers read their inputs by sparse matrix products over whole-graph arrays, so the
        # inputs of every user are kept too (gat gathers the neighbourhoods and computes inputs on the fly)
        self.mean_aggr = model.mean_aggregating
        self.x0 = None
        if self.mean_aggr:
            with torch.no_grad():
                n = self.limit
                self.x0 = np.concatenate([self._inputs(np.arange(s, min(n, s + 65536))).numpy()
                                          for s in range(0, n, 65536)]) if n else \
                    np.zeros((0, model.config.dim), np.float32)
        if emb is None or (states is None and layers > 1):
            emb, states = infer(model, self._known_graph(), torch.from_numpy(self.struct), keep_states=True)
        self.emb = emb if emb.flags.writeable else np.array(emb)  # updated in place
        self.states = list(states or [])
        if len(self.states) != layers - 1:
            raise ValueError(f"{layers}-layer model needs {layers - 1} hidden states, got {len(self.states)}")

    def _inputs(self, nodes: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(nodes)
        return self.model.features(t, torch.from_numpy(self.struct[nodes]))

    def _known_graph(self):
        """The live graph restricted to the users with an id embedding (a new CSR)."""
        from pymk.graph.snapshot import CSRGraph

        g = self.adj.to_graph() if self.adj.num_users != self.adj.graph.num_users or self.adj.delta_entries > 1 \
            else self.adj.graph
        if g.num_users == self.limit:
            return g
        ptr, idx = self._rows(np.arange(self.limit))
        return CSRGraph(ptr, idx.astype(g.indices.dtype), np.asarray(g.ids[:self.limit]), None, dict(g.meta))

    def _rows(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Current lists of `targets`, without users who have no embedding yet (joined since the build)."""
        ptr, idx = self.adj.rows(targets)
        if self.adj.num_users == self.limit:
            return ptr, idx
        keep = idx < self.limit
        row = np.repeat(np.arange(targets.size), np.diff(ptr))[keep]
        out = np.zeros(targets.size + 1, np.int64)
        np.cumsum(np.bincount(row, minlength=targets.size), out=out[1:])
        return out, idx[keep]

    def _ball(self, seeds: np.ndarray, radius: int) -> np.ndarray:
        ball = self.adj.ball(seeds, radius)
        return ball[ball < self.limit]

    def _layer(self, i: int, targets: np.ndarray) -> torch.Tensor:
        """Layer i's output for `targets`, over their current full neighbourhoods. Shapes: (t,) -> (t, d)."""
        if self.mean_aggr:
            return self._mean_layer(i, targets)
        ptr, idx = self._rows(targets)
        src, local = np.unique(idx, return_inverse=True)
        prev = self._inputs if i == 0 else (lambda v: torch.from_numpy(self.states[i - 1][v]))
        dst = np.repeat(np.arange(targets.size), np.diff(ptr))
        edge_index = torch.from_numpy(np.stack([local.reshape(-1), dst]).astype(np.int64))
        return self.model.layer(i, prev(src), prev(targets), edge_index)

    def _mean_layer(self, i: int, targets: np.ndarray) -> torch.Tensor:
        """The same for mean aggregators: neighbour means as one CSR (t x n) times the (n, d) inputs."""
        ptr, idx = self._rows(targets)
        prev = torch.from_numpy(self.x0 if i == 0 else self.states[i - 1])
        return self.model.conv_from_mean(i, neighbour_mean(ptr, idx, prev), prev[torch.from_numpy(targets)])

    @torch.no_grad()
    def apply(self, lo: np.ndarray, hi: np.ndarray, ts=None) -> Refresh:
        """Adds friendships (dense indices, made at `ts`, default now) and refreshes the embeddings they change.

        Shapes: lo, hi (e,) -> Refresh with the users whose embedding was recomputed.
        """
        t0 = time.perf_counter()
        lo, hi = self.adj.add(lo, hi, ts)
        return self.refresh(np.unique(np.concatenate([lo, hi])), int(lo.size), t0)

    @torch.no_grad()
    def refresh(self, ends: np.ndarray, new_edges: int = 0, t0: float | None = None) -> Refresh:
        """Recomputes the embeddings changed by friendships already applied to the live graph (added or
        removed) whose endpoints are `ends`. Shapes: ends (e,) dense indices -> Refresh."""
        t0 = time.perf_counter() if t0 is None else t0
        all_ends = np.unique(np.asarray(ends, np.int64))
        ends = all_ends[all_ends < self.limit]
        if not ends.size:
            return Refresh(np.empty(0, np.int64), np.empty((0, self.emb.shape[1]), np.float32), new_edges,
                           time.perf_counter() - t0, all_ends)
        self.struct[ends, 0] = structural_features(self.adj.degree[ends], self.stats)[:, 0]
        if self.x0 is not None:
            self.x0[ends] = self._inputs(ends).numpy()
        layers = len(self.model.convs)
        hidden = [ends]
        for _ in range(1, layers):  # hidden layer i changes exactly for the users within i hops
            hidden.append(self._ball(hidden[-1], 1))
        users = self._ball(ends, self.radius)
        deg = self.adj.degree[:self.limit]
        work = sum(int(deg[c].sum()) for c in hidden[1:]) + int(deg[users].sum())
        if work > self.full_share * layers * int(deg.sum()):
            self._full_hidden()
        else:
            for i in range(1, layers):
                self.states[i - 1][hidden[i]] = self._layer(i - 1, hidden[i]).numpy()
        out = self._layer(layers - 1, users)
        if self.model.config.skip:
            out = out + (torch.from_numpy(self.x0[users]) if self.x0 is not None else self._inputs(users))
        vectors = out.numpy().astype(np.float32)
        self.emb[users] = vectors
        return Refresh(users, vectors, new_edges, time.perf_counter() - t0, all_ends)

    def _full_hidden(self) -> None:
        """Every hidden state recomputed over the live graph: sparse products over everyone in chunks for
        mean aggregators (no new CSR needed), full inference otherwise."""
        self.full_passes += 1
        if not self.mean_aggr:
            from pymk.gnn.train import infer

            _, states = infer(self.model, self._known_graph(), torch.from_numpy(self.struct), keep_states=True)
            for mine, new in zip(self.states, states, strict=True):
                mine[:] = new
            return
        n, chunk = self.limit, 65536
        for i in range(len(self.model.convs) - 1):  # each layer reads the previous one's array whole
            new = np.empty_like(self.states[i])
            for s in range(0, n, chunk):
                new[s:s + chunk] = self._mean_layer(i, np.arange(s, min(n, s + chunk))).numpy()
            self.states[i][:] = new
