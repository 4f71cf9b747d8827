"""Embeddings for users who joined after the build, computed from their neighbourhood with no retraining.

The GNN's input is a learned id embedding, which a new user does not have, so its embedding cannot come
from the trained layers as they are. Its inductive estimate is the mean of its friends' current
embeddings (the users it links to, which the trained model placed): a link-prediction encoder scores
pairs by inner product and puts friends close, so the centroid of a user's friends lands where the user
would. It is recomputed whenever the user's friendships change (the stream worker) and inserted into
the ANN index, so the user both searches from it and is found by others. Measured in
`benchmarks/bench_live.py` (newusers, `--gnn`).

`GrowingEmbeddings` serves the model's matrix (rows 0..n0-1, as the refresher keeps it) plus these rows,
with the interface Stage 1 reads (`shape`, `[users]`, `np.asarray`, `has(users)`).
"""

from __future__ import annotations

import threading

import numpy as np


class GrowingEmbeddings:
    """Args: base: the (n0, d) embeddings of the build's users (a matrix or the tiered store)."""

    def __init__(self, base):
        self.base = base
        self.n0 = int(base.shape[0])
        self.d = int(base.shape[1])
        self.extra = np.zeros((16, self.d), np.float32)
        self.have = np.zeros(16, bool)
        self.count = 0  # rows past n0 in use (new users 0 .. count-1)
        self._lock = threading.Lock()

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n0 + self.count, self.d)

    def set(self, users: np.ndarray, vectors: np.ndarray) -> None:
        """New users' vectors. Shapes: users (m,) dense indices >= n0, vectors (m, d)."""
        users = np.asarray(users, np.int64) - self.n0
        if not users.size:
            return
        with self._lock:
            need = int(users.max()) + 1
            if need > self.extra.shape[0]:
                cap = max(need, 2 * self.extra.shape[0])
                extra = np.zeros((cap, self.d), np.float32)
                extra[:self.count] = self.extra[:self.count]
                have = np.zeros(cap, bool)
                have[:self.count] = self.have[:self.count]
                self.extra, self.have = extra, have
            self.extra[users] = vectors
            self.have[users] = True
            self.count = max(self.count, need)

    def drop(self, users: np.ndarray) -> None:
        users = np.asarray(users, np.int64)
        users = users[(users >= self.n0) & (users < self.n0 + self.count)] - self.n0
        self.have[users] = False
        self.extra[users] = 0.0

    def has(self, users: np.ndarray) -> np.ndarray:
        """(m,) bool: the user has a vector (a build user, or a new one with an inductive estimate)."""
        users = np.asarray(users, np.int64)
        out = (users >= 0) & (users < self.n0)
        new = (users >= self.n0) & (users < self.n0 + self.count)
        out[new] = self.have[users[new] - self.n0]
        return out

    def __getitem__(self, users) -> np.ndarray:
        users = np.atleast_1d(np.asarray(users, np.int64))
        out = np.zeros((users.size, self.d), np.float32)
        old = users < self.n0
        if old.any():
            out[old] = self.base[users[old]]
        if (~old).any():
            out[~old] = self.extra[users[~old] - self.n0]
        return out

    def __array__(self, dtype=None, copy=None):  # exact search wants the whole matrix
        return np.concatenate([np.asarray(self.base, np.float32), self.extra[:self.count]]).astype(
            dtype or np.float32, copy=False)


def neighbour_centroids(graph, emb: np.ndarray, users: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of each user's friends' embeddings (friends with a row below `limit`).

    Returns (users that have at least one such friend, their (m, d) vectors)."""
    users = np.asarray(users, np.int64)
    ptr, idx = graph.rows(users)
    keep = idx < limit
    row = np.repeat(np.arange(users.size), np.diff(ptr))[keep]
    cnt = np.bincount(row, minlength=users.size)
    sums = np.zeros((users.size, emb.shape[1]), np.float64)
    np.add.at(sums, row, np.asarray(emb[idx[keep]], np.float64))
    ok = cnt > 0
    return users[ok], (sums[ok] / cnt[ok, None]).astype(np.float32)
