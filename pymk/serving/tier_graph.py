"""What the stateless ranking tier keeps of the graph: who exists, and no friendship at all.

A `TierGraph` stands where a model's `LiveGraph` stands (`Model.graph`) when the model is served by shard
servers as a ranking tier (`Model.load(..., tier=True)`): the id map (external id <-> dense index, users who
joined since the build appended), the erased accounts and the pairs who unfriended, which are O(users +
changes); every list is read from the shard servers (`ShardRouter`) and every change is written to them.
So the tier maps no adjacency entry: each shard server holds its 1/S (plus its replicas).

The writer interface is `LiveGraph`'s (`resolve`, `apply`, `erase`, `remember_unfriended`), so the one
path that changes a served model (`pymk.pipeline.changes.apply_events`) runs on it unchanged.
"""

from __future__ import annotations

import threading

import numpy as np

from pymk.graph.users import UserRegistry


class TierGraphError(RuntimeError):
    """A read the tier cannot make without the whole graph."""


class TierGraph(UserRegistry):
    """Ids, erasures and unfriendings of a model whose lists live on shard servers.

    Args:
        ids: (n,) sorted external ids of the build's users (dense index i = ids[i]).
        router: the shard servers' `ShardRouter` (lists read and changes written there).
        num_edges: friendships at the build (kept current as changes are applied).
    """

    tier = True  # a graph without adjacency: Stage 1 and the features read the servers (`pymk.serving.tier`)

    def __init__(self, ids: np.ndarray, router, *, num_edges: int = 0):
        self._build_ids = np.asarray(ids, np.int64)
        n = self._build_ids.size
        self._ids = self._build_ids.copy()
        self._erased = np.zeros(n, bool)
        self._n = n
        self._new: dict[int, int] = {}
        self._unsent: list[int] = []  # users created since the last write to the servers
        self.router = router
        self.erased_ids: set[int] = set()
        self.erased_index = np.zeros(0, np.int64)
        self.unfriended: dict[int, set[int]] = {}
        self.edges = int(num_edges)
        self.time_span = (np.nan, np.nan)  # the build's first and last friendship times (the features' scale)
        self._lock = threading.RLock()

    # ------------------------------------------------------------------------------ ids

    @property
    def num_users(self) -> int:
        return self._n

    @property
    def num_edges(self) -> int:
        return self.edges

    @property
    def capacity(self) -> int:
        return self._n

    @property
    def ids(self) -> np.ndarray:
        return self._ids[:self._n]

    @property
    def erased(self) -> np.ndarray:
        return self._erased[:self._n]

    def add_users(self, user_ids) -> np.ndarray:
        idx = self.resolve(user_ids, create=True)
        self._send_new()
        return idx

    def _add_user(self, uid: int) -> int:
        u = self._n
        if u >= self._ids.size:
            grow = max(16, self._ids.size // 4)
            self._ids = np.concatenate([self._ids, np.zeros(grow, np.int64)])
            self._erased = np.concatenate([self._erased, np.zeros(grow, bool)])
        self._ids[u] = uid
        self._new[uid] = u
        self._n = u + 1
        self._unsent.append(u)
        return u

    def _send_new(self) -> np.ndarray:
        """Gives the users created since the last write a home shard (in the router's plan); returns them."""
        if not self._unsent:
            return np.zeros(0, np.int64)
        new = np.array(self._unsent, np.int64)
        self._unsent = []
        self.router.add_users(new, self._ids[new])
        return new

    # ------------------------------------------------------------------------------ reads (one round each)

    def rows(self, nodes) -> tuple[np.ndarray, np.ndarray]:
        """Current lists of `nodes`, from their home shards. Shapes: (r,) -> ptr (r + 1,), idx (sum,) int64."""
        from pymk.graph.request_graph import RequestGraph

        nodes = np.asarray(nodes, np.int64)
        return RequestGraph(*self.router.fetch(nodes)).global_lists(nodes)

    def neighbors(self, u: int) -> np.ndarray:
        return self.rows(np.array([u], np.int64))[1]

    @property
    def degree(self):
        raise TierGraphError("the ranking tier holds no adjacency: degrees are read from the shard servers")

    def warm(self) -> None:
        """Nothing to compile: the servers' writers warm themselves."""

    def needs_compaction(self, share: float = 0.25) -> bool:
        return False  # each shard server compacts its own delta

    # ------------------------------------------------------------------------------ the writer

    def apply(self, kind, lo, hi, ts=None) -> np.ndarray:
        """Adds (kind 1) or removes (kind -1) the friendships lo[e]-hi[e] on the shard servers, in order,
        after any users created since the last write. Returns (e,) bool: which changed the graph."""
        lo = np.asarray(lo, np.int64).ravel()
        hi = np.asarray(hi, np.int64).ravel()
        kind = np.broadcast_to(np.asarray(kind, np.int8), lo.shape).copy()
        with self._lock:
            self._check_pairs(lo, hi)
            new = self._send_new()
            todo = np.flatnonzero((lo != hi) & ~self._erased[lo] & ~self._erased[hi])
            changed = np.zeros(lo.size, bool)
            if todo.size or new.size:
                t = None if ts is None else np.broadcast_to(np.asarray(ts, np.float64), lo.shape)[todo]
                changed[todo] = self.router.apply(kind[todo], lo[todo], hi[todo], t, new_users=new)
            self.edges += int((kind[changed] == 1).sum()) - int((kind[changed] == -1).sum())
            return changed
