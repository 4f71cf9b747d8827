"""Who is in a living graph: the id map (external id <-> dense index, users who joined appended), erased
accounts and pairs who unfriended, and what both living graphs answer from their lists alike (erasure,
`has_edge`, `ball`). One implementation for the graph that holds the adjacency (`LiveGraph`) and for the
ranking tier's, which holds none (`pymk.serving.tier_graph.TierGraph`)."""

from __future__ import annotations

import numpy as np


class UserRegistry:
    """Mixin. The class sets `_lock`, `_n` (users), `_build_ids` ((n0,) sorted build ids), `_new` (id -> dense
    index of the users who joined), `_ids`, `_erased` (growing arrays), `erased_ids`, `erased_index`,
    `unfriended`, and implements `_add_user(uid) -> dense index`, `neighbors(u)`, `rows(nodes)` and
    `apply(kind, lo, hi)`."""

    def index_of(self, user_ids) -> np.ndarray:
        """Dense indices of external ids; -1 for ids never seen and for erased users. Shapes: (q,) -> (q,)."""
        idx = self._lookup(user_ids)
        ok = idx >= 0
        idx[ok] = np.where(self._erased[idx[ok]], -1, idx[ok])
        return idx

    def _lookup(self, user_ids) -> np.ndarray:
        q = np.asarray(user_ids, dtype=np.int64).ravel()
        ids = self._build_ids
        if ids.size:
            pos = np.minimum(np.searchsorted(ids, q), ids.size - 1)
            out = np.where(ids[pos] == q, pos, -1).astype(np.int64)
        else:
            out = np.full(q.shape, -1, np.int64)
        if self._new:
            for i in np.flatnonzero(out < 0).tolist():
                out[i] = self._new.get(int(q[i]), -1)
        return out

    def resolve(self, user_ids, *, create: bool = False) -> np.ndarray:
        """Dense indices of external ids for a writer: -1 unknown (a new user when `create`), -2 erased."""
        with self._lock:
            q = np.asarray(user_ids, np.int64).ravel()
            idx = self._lookup(q)
            if self.erased_ids and (idx < 0).any():  # erased before this graph's snapshot: not in its ids
                for i in np.flatnonzero(idx < 0).tolist():
                    if int(q[i]) in self.erased_ids:
                        idx[i] = -2
            if create and (idx == -1).any():
                for i in np.flatnonzero(idx == -1).tolist():
                    got = self._new.get(int(q[i]))
                    idx[i] = got if got is not None else self._add_user(int(q[i]))
            ok = idx >= 0
            idx[ok] = np.where(self._erased[idx[ok]], -2, idx[ok])
            return idx

    hidden_ids: frozenset = frozenset()  # external ids of users who set themselves undiscoverable
    hidden_index = np.zeros(0, np.int64)  # their dense indices, sorted (replaced on change, never mutated)

    def set_discoverable(self, u: int, discoverable: bool) -> bool:
        """User u (dense) may be recommended to others, or not (it still gets its own recommendations).
        Returns whether that changed."""
        with self._lock:
            ext = int(self._ids[u])
            if (ext in self.hidden_ids) != discoverable:  # already as asked
                return False
            if discoverable:
                self.hidden_ids = self.hidden_ids - {ext}
                self.hidden_index = np.setdiff1d(self.hidden_index, [u]).astype(np.int64)
            else:
                self.hidden_ids = self.hidden_ids | {ext}
                self.hidden_index = np.union1d(self.hidden_index, [u]).astype(np.int64)
            return True

    def remember_unfriended(self, lo, hi) -> None:
        """Records that lo[e] and hi[e] unfriended (whether or not they were friends here): neither is
        recommended to the other again."""
        with self._lock:
            for x, y in zip(np.asarray(lo).tolist(), np.asarray(hi).tolist(), strict=True):
                if x != y and not (self._erased[x] or self._erased[y]):
                    self.unfriended.setdefault(x, set()).add(y)
                    self.unfriended.setdefault(y, set()).add(x)

    def erase(self, u: int) -> np.ndarray:
        """Erases user u: every friendship removed, flagged erased (its id is never resolved again, and no one
        keeps it among their former friends). Returns its former friends (sorted)."""
        from pymk.graph.live import REMOVE

        with self._lock:
            u = int(u)
            if self._erased[u]:
                return np.empty(0, np.int64)
            friends = self.neighbors(u).astype(np.int64)
            self.apply(REMOVE, np.full(friends.size, u, np.int64), friends)
            self._erased[u] = True
            self.erased_ids.add(int(self._ids[u]))
            self.erased_index = np.union1d(self.erased_index, [u]).astype(np.int64)
            for v in self.unfriended.pop(u, ()):
                self.unfriended.get(v, set()).discard(u)
            self._on_erased(u)
            return friends

    def _on_erased(self, u: int) -> None:
        """Called once u is erased (a graph that records its changes records it)."""

    def _check_pairs(self, lo: np.ndarray, hi: np.ndarray) -> None:
        """Raises IndexError naming the first pair with an end outside the users 0..n-1."""
        n = self._n
        bad = (lo < 0) | (lo >= n) | (hi < 0) | (hi >= n)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise IndexError(f"edge {int(lo[i])}-{int(hi[i])}: user index outside the graph's {n} users")

    # ------------------------------------------------------------------------------ reads over the lists

    def has_edge(self, a: int, b: int) -> bool:
        r = self.neighbors(a)
        i = np.searchsorted(r, b)
        return bool(i < r.size and r[i] == b)

    def ball(self, seeds: np.ndarray, radius: int) -> np.ndarray:
        """Users within `radius` hops of `seeds` (seeds included), sorted (one `rows` read per hop).
        Shapes: (s,) -> (m,)."""
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
