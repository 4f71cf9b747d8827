"""Staleness tracking, the brief's Strategy 2: staleness = new neighbours in the last 24 h / degree.

A user whose staleness passes the threshold (default 5%) is due for an embedding refresh; the others
keep their cached embedding. New neighbours count from the user's last refresh, so a refreshed user
starts again at 0; events older than the window expire.
"""

from __future__ import annotations

import numpy as np


class StalenessTracker:
    """Per-user count of new neighbours within a sliding time window.

    Args:
        degree: (n,) int64 current degrees; read at query time (pass the live graph's array).
        window_s: the window in seconds (default 24 h).
        threshold: staleness above which a user is due for a refresh.
    """

    def __init__(self, degree: np.ndarray, *, window_s: float = 86_400, threshold: float = 0.05):
        if window_s <= 0 or not 0 <= threshold:
            raise ValueError(f"window_s must be > 0 and threshold >= 0, got {window_s}, {threshold}")
        self.degree = degree
        self.window_s = float(window_s)
        self.threshold = float(threshold)
        n = degree.shape[0]
        self.counts = np.zeros(n, np.int64)
        self.refreshed_seq = np.zeros(n, np.int64)  # events numbered before a user's refresh are cleared
        self._seq = 0
        self._ts: list[np.ndarray] = []  # chunks of events in arrival order, each sorted by time
        self._users: list[np.ndarray] = []
        self._seqs: list[np.ndarray] = []
        self.now = -np.inf

    def record(self, lo: np.ndarray, hi: np.ndarray, ts: np.ndarray | float) -> None:
        """New friendships at times `ts` (seconds): both ends gain a neighbour. Shapes: lo, hi, ts (e,)."""
        lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
        ts = np.broadcast_to(np.asarray(ts, np.float64), lo.shape)
        users, t = np.concatenate([lo, hi]), np.concatenate([ts, ts])
        order = np.argsort(t, kind="stable")
        self._ts.append(t[order])
        self._users.append(users[order])
        self._seqs.append(np.full(users.size, self._seq, np.int64))
        self._seq += 1
        np.add.at(self.counts, users, 1)
        self.advance(float(t.max()) if t.size else self.now)

    def advance(self, now: float) -> None:
        """Moves the clock to `now` and expires what left the window."""
        self.now = max(self.now, now)
        cutoff = self.now - self.window_s
        while self._ts and self._ts[0].size and self._ts[0][0] < cutoff:
            ts, users, seqs = self._ts[0], self._users[0], self._seqs[0]
            k = int(np.searchsorted(ts, cutoff, side="left"))
            gone_u = users[:k]
            counted = seqs[:k] >= self.refreshed_seq[gone_u]
            np.subtract.at(self.counts, gone_u[counted], 1)
            self._ts[0], self._users[0], self._seqs[0] = ts[k:], users[k:], seqs[k:]
            self._drop_empty()
        self._drop_empty()

    def _drop_empty(self) -> None:
        while self._ts and not self._ts[0].size:
            del self._ts[0], self._users[0], self._seqs[0]

    def staleness(self, users=None) -> np.ndarray:
        """New neighbours since the last refresh and within the window, over degree. Shapes: (u,) -> (u,)."""
        users = np.arange(self.counts.size) if users is None else np.asarray(users, np.int64)
        return self.counts[users] / np.maximum(np.asarray(self.degree)[users], 1)

    def due(self) -> np.ndarray:
        """Users whose staleness is above the threshold, sorted. Shapes: -> (k,) int64."""
        return np.flatnonzero(self.staleness() > self.threshold)

    def mark_refreshed(self, users) -> None:
        """These users' embeddings were just recomputed: their count starts again from 0."""
        users = np.asarray(users, np.int64)
        self.counts[users] = 0
        self.refreshed_seq[users] = self._seq
