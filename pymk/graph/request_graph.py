"""The lists one request read from the shard servers, as a small CSR the graph kernels run on unchanged.

The stateless ranking tier (`pymk.serving.tier`) holds no adjacency. For a batch of users it fetches the
lists it needs (the users', their friends', then their candidates') and puts them in a `RequestGraph`:
every user named (fetched, or only seen in a fetched list) gets a local index, in the order of the global
ones (so ties broken by index break alike), and a CSR over the local indices holds the fetched rows; a row
not fetched is empty. Friends-of-friends, pair scores, paths3, ridge and the mutual-friend sample then run
on `csr` exactly as on the whole graph, because each reads only rows the tier fetched.
"""

from __future__ import annotations

import numpy as np

from pymk.graph.snapshot import CSRGraph


class RequestGraph:
    """Rows `users[i]` = `idx[ptr[i]:ptr[i + 1]]` (global dense indices, each list ascending).

    Attributes:
        ids: (m,) sorted global indices of every user named; local index i is user ids[i].
        csr: CSRGraph over local indices (m rows; `csr.ids` = `ids`).
        fetched: (m,) bool, the rows fetched (the others are empty, not friendless).
    Shapes: users (r,) int64, ptr (r + 1,) int64, idx (sum,) int64.
    """

    def __init__(self, users: np.ndarray, ptr: np.ndarray, idx: np.ndarray):
        from pymk.graph.shard_store import gather_rows

        users, first = np.unique(np.asarray(users, np.int64), return_index=True)  # a row fetched twice: once
        ptr, idx = gather_rows(np.asarray(ptr, np.int64), np.asarray(idx, np.int64), first)  # rows by user
        self._rows = (users, ptr, idx)
        self.ids = np.union1d(users, idx)
        m = self.ids.size
        at = np.searchsorted(self.ids, users)  # increasing: the rows are already in local order
        indptr = np.zeros(m + 1, np.int64)
        indptr[1:][at] = np.diff(ptr)
        np.cumsum(indptr, out=indptr)
        dtype = np.int32 if m < 2**31 else np.int64  # the snapshot's type: the kernels compile once
        self.csr = CSRGraph(indptr, np.searchsorted(self.ids, idx).astype(dtype), self.ids)
        self.fetched = np.zeros(m, bool)
        self.fetched[at] = True

    def held_lists(self):
        """The PPR push's view of the fetched rows (`pymk.candidates.ppr_push.HeldLists`), made once."""
        held = self.__dict__.get("_held")
        if held is None:
            from pymk.candidates.ppr_push import HeldLists

            held = self._held = HeldLists(self.csr, self.ids, self.fetched, local=True)
        return held

    @classmethod
    def empty(cls) -> RequestGraph:
        return cls(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64))

    def with_rows(self, users: np.ndarray, ptr: np.ndarray, idx: np.ndarray) -> RequestGraph:
        """A graph with these rows added (rows already here are kept, not fetched twice)."""
        u0, p0, i0 = self._rows
        users = np.asarray(users, np.int64)
        new = ~np.isin(users, u0)
        if not new.all():
            from pymk.graph.shard_store import gather_rows

            ptr, idx = gather_rows(np.asarray(ptr, np.int64), np.asarray(idx, np.int64), np.flatnonzero(new))
            users = users[new]
        return RequestGraph(np.concatenate([u0, users]), np.concatenate([p0, np.asarray(ptr[1:], np.int64) + p0[-1]]),
                            np.concatenate([i0, np.asarray(idx, np.int64)]))

    # ------------------------------------------------------------------------------ ids

    def local(self, users) -> np.ndarray:
        """Local indices of global users; -1 for users not named here. Any shape -> same shape."""
        users = np.asarray(users, np.int64)
        if not self.ids.size:
            return np.full(users.shape, -1, np.int64)
        pos = np.minimum(np.searchsorted(self.ids, users), self.ids.size - 1)
        return np.where((users >= 0) & (self.ids[pos] == users), pos, -1).astype(np.int64)

    def glob(self, local) -> np.ndarray:
        """Global indices of local ones (-1 stays -1). Any shape -> same shape."""
        local = np.asarray(local, np.int64)
        return np.where(local >= 0, self.ids[np.maximum(local, 0)] if self.ids.size else -1, -1)

    def has_rows(self, users) -> np.ndarray:
        """(q,) bool: whether each global user's list was fetched."""
        loc = self.local(users)
        return (loc >= 0) & self.fetched[np.maximum(loc, 0)] if self.ids.size else np.zeros(loc.shape, bool)

    # ------------------------------------------------------------------------------ reads, global ids

    def global_lists(self, users) -> tuple[np.ndarray, np.ndarray]:
        """Fetched lists of global users (an unfetched one reads empty). Returns ptr (q + 1,), idx global."""
        from pymk.graph.rows import gather

        loc = self.local(users)
        ptr, idx = gather(self.csr, np.maximum(loc, 0)) if self.ids.size else (np.zeros(loc.size + 1, np.int64),
                                                                               np.zeros(0, np.int64))
        if (loc < 0).any():  # users not named here: empty rows
            lens = np.where(loc >= 0, np.diff(ptr), 0)
            keep = np.repeat(loc >= 0, np.diff(ptr))
            idx = idx[keep]
            ptr = np.concatenate([[0], np.cumsum(lens)])
        return ptr.astype(np.int64), self.ids[np.asarray(idx, np.int64)]

    def neighbors(self, u: int) -> np.ndarray:
        return self.global_lists(np.array([u], np.int64))[1]

    def degree_here(self, users) -> np.ndarray:
        """(q,) degree of users whose lists were fetched, -1 for the others."""
        loc = self.local(users)
        ok = loc >= 0
        ok[ok] = self.fetched[loc[ok]]
        deg = np.asarray(self.csr.degree)
        return np.where(ok, deg[np.maximum(loc, 0)] if deg.size else 0, -1).astype(np.int64)

    def degree_of(self, users) -> np.ndarray:
        """(q,) current degree of fetched users (0 for the others: fetch a user's row before reading it)."""
        loc = self.local(users)
        deg = np.asarray(self.csr.degree)
        return np.where(loc >= 0, deg[np.maximum(loc, 0)] if deg.size else 0, 0).astype(np.int64)
