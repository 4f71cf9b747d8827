"""Who is in a living graph: the id map (external id <-> dense index, users who joined appended), erased
accounts and pairs who unfriended. One implementation for the graph that holds the adjacency (`LiveGraph`)
and for the ranking tier's, which holds none (`pymk.serving.tier_graph.TierGraph`)."""

from __future__ import annotations

import numpy as np


class UserRegistry:
    """Mixin. The class sets `_lock`, `_build_ids` ((n0,) sorted build ids), `_new` (id -> dense index of the
    users who joined), `_ids`, `_erased` (growing arrays), `erased_ids`, `erased_index`, `unfriended`, and
    implements `_add_user(uid) -> dense index`."""

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
            if create and (idx < 0).any():
                for i in np.flatnonzero(idx < 0).tolist():
                    got = self._new.get(int(q[i]))
                    idx[i] = got if got is not None else self._add_user(int(q[i]))
            ok = idx >= 0
            idx[ok] = np.where(self._erased[idx[ok]], -2, idx[ok])
            return idx

    def remember_unfriended(self, lo, hi) -> None:
        """Records that lo[e] and hi[e] unfriended (whether or not they were friends here): neither is
        recommended to the other again."""
        with self._lock:
            for x, y in zip(np.asarray(lo).tolist(), np.asarray(hi).tolist(), strict=True):
                if x != y and not (self._erased[x] or self._erased[y]):
                    self.unfriended.setdefault(x, set()).add(y)
                    self.unfriended.setdefault(y, set()).add(x)

    def _mark_erased(self, u: int) -> None:
        """Flags u erased (its friendships already removed): its id is never resolved again, and no one keeps
        it among their former friends."""
        self._erased[u] = True
        self.erased_ids.add(int(self._ids[u]))
        self.erased_index = np.union1d(self.erased_index, [u]).astype(np.int64)
        for v in self.unfriended.pop(u, ()):
            self.unfriended.get(v, set()).discard(u)
