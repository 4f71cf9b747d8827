"""The living graph: an immutable snapshot plus a mutable delta, read by every kernel without a copy.

The delta holds the current row of every user a change touched (friendship added or removed, user
added or erased), copy-on-write in an append-only arena (`pymk.graph.rows`):
    - applying a friendship A-B writes new rows for A and B (their old row plus or minus one entry,
      kept sorted) and then points `ovr[A]`, `ovr[B]` at them: O(deg A + deg B), never O(graph);
    - a row once written is never changed, so a request that holds the kernel tuple reads whole rows
      while the writer goes on; arrays that must grow are replaced, never resized under a reader;
    - a new user gets the next dense index (ids past the snapshot are looked up in a dict);
    - an erased user loses every friendship (each friend's row rewritten) and is flagged `erased`.
Compaction (`compact`) folds snapshot + delta into a new in-memory CSR generation off the writer's lock
(it copies `ovr` under the lock, then reads immutable rows), replays the changes made meanwhile onto
the new generation and swaps it in with one assignment; the old delta is dropped only then.

One writer at a time (a lock); any number of readers. `LiveGraph` answers the `CSRGraph` interface
(`num_users`, `degree`, `ids`, `neighbors`, `index_of`, ...) so Stage 1, the features, the filters and
the explanations take either.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from numba import njit

from pymk.graph import rows as R
from pymk.graph.snapshot import CSRGraph
from pymk.graph.users import UserRegistry

ADD, REMOVE = 1, -1


@njit(cache=True)
def _put(src, src_ts, has_ts, y, t, kind, arena, arena_ts, at):
    """Writes `src` with y inserted (kind 1) or removed (kind -1) as a row at arena[at]; returns its
    length, or -1 when nothing changes (y already there / not there)."""
    n = src.shape[0]
    pos = np.searchsorted(src, y)
    present = pos < n and src[pos] == y
    if (kind == 1 and present) or (kind == -1 and not present):
        return -1
    m = n + kind
    arena[at] = m
    b = at + 1
    arena[b:b + pos] = src[:pos]
    if has_ts:
        arena_ts[at] = 0
        arena_ts[b:b + pos] = src_ts[:pos]
    if kind == 1:
        arena[b + pos] = y
        arena[b + pos + 1:b + m] = src[pos:]
        if has_ts:
            arena_ts[b + pos] = t
            arena_ts[b + pos + 1:b + m] = src_ts[pos:]
    else:
        arena[b + pos:b + m] = src[pos + 1:]
        if has_ts:
            arena_ts[b + pos:b + m] = src_ts[pos + 1:]
    return m


@njit(cache=True)
def _write(x, y, t, kind, indptr, indices, snap_ts, ovr, pend, arena, arena_ts, has_ts, at):
    """The new row of x after the change to (x, y) at arena[at]; returns its length or -1 (no change)."""
    o = pend[x]
    if o < 0 and x < ovr.shape[0]:
        o = ovr[x]
    if o >= 0:
        ln = arena[o]
        return _put(arena[o + 1:o + 1 + ln], arena_ts[o + 1:o + 1 + ln] if has_ts else arena_ts[:0], has_ts,
                    y, t, kind, arena, arena_ts, at)
    a, b = indptr[x], indptr[x + 1]
    return _put(indices[a:b], snap_ts[a:b] if has_ts else snap_ts[:0], has_ts, y, t, kind, arena, arena_ts, at)


@njit(cache=True)
def _cur_len(x, indptr, ovr, pend, arena):
    o = pend[x]
    if o < 0:
        o = ovr[x]
    if o >= 0:
        return arena[o]
    return indptr[x + 1] - indptr[x]


@njit(cache=True)
def _apply(indptr, indices, snap_ts, ovr, pend, arena, arena_ts, has_ts, used, deg, kind, lo, hi, ts, start,
           changed, touched, nt):
    """Applies changes start.. in order until the arena is full. Returns (next change, arena used, touched).

    kind[e] 1 adds lo[e]-hi[e], -1 removes it; changed[e] says whether it did anything. New rows go to
    pend[] (the caller publishes them to ovr[] after the call, so no reader sees half a batch's rows).
    """
    cap = arena.shape[0]
    for e in range(start, lo.shape[0]):
        a, b, k = lo[e], hi[e], kind[e]
        need = _cur_len(a, indptr, ovr, pend, arena) + _cur_len(b, indptr, ovr, pend, arena) + 4
        if used + need > cap:
            return e, used, nt
        la = _write(a, b, ts[e], k, indptr, indices, snap_ts, ovr, pend, arena, arena_ts, has_ts, used)
        if la < 0:
            changed[e] = False
            continue
        lb = _write(b, a, ts[e], k, indptr, indices, snap_ts, ovr, pend, arena, arena_ts, has_ts, used + 1 + la)
        for x, at in ((a, used), (b, used + 1 + la)):
            if pend[x] < 0:
                touched[nt] = x
                nt += 1
            pend[x] = at
        used += 2 + la + lb
        deg[a] += k
        deg[b] += k
        changed[e] = True
    return lo.shape[0], used, nt


@njit(cache=True)
def _apply_half(indptr, indices, snap_ts, ovr, pend, arena, arena_ts, has_ts, used, deg, kind, x, y, ts, start,
                changed, touched, nt):
    """`_apply` for one end of each change: row x[e] gains (kind 1) or loses (kind -1) the entry y[e]; the
    rows of a shard's living graph hold the ends it owns. Returns (next change, arena used, touched)."""
    cap = arena.shape[0]
    for e in range(start, x.shape[0]):
        a = x[e]
        if used + _cur_len(a, indptr, ovr, pend, arena) + 2 > cap:
            return e, used, nt
        la = _write(a, y[e], ts[e], kind[e], indptr, indices, snap_ts, ovr, pend, arena, arena_ts, has_ts, used)
        if la < 0:
            changed[e] = False
            continue
        if pend[a] < 0:
            touched[nt] = a
            nt += 1
        pend[a] = used
        used += 1 + la
        deg[a] += kind[e]
        changed[e] = True
    return x.shape[0], used, nt


@njit(cache=True)
def _fold_lengths(g, n, out):
    for u in range(n):
        out[u] = R.deg(g, u)


@njit(cache=True)
def _fold(g, snap_ts, arena_ts, has_ts, n, ptr, idx, ts):
    """Snapshot + delta rows of users 0..n-1 into one CSR (ptr given)."""
    indptr, ovr = g[0], g[2]
    for u in range(n):
        a = ptr[u]
        r = R.row(g, u)
        idx[a:a + r.shape[0]] = r
        if has_ts:
            o = ovr[u] if u < ovr.shape[0] else -1
            if o >= 0:
                ts[a:a + r.shape[0]] = arena_ts[o + 1:o + 1 + r.shape[0]]
            else:
                ts[a:a + r.shape[0]] = snap_ts[indptr[u]:indptr[u + 1]]


class LiveGraph(UserRegistry):
    """Snapshot + delta (see the module docstring).

    Args:
        snapshot: the build's CSRGraph (memory-mapped is fine: it is only read).
        arena: initial delta capacity in adjacency entries (default: 1/16 of the snapshot's, at least 1M).
    """

    def __init__(self, snapshot: CSRGraph, *, arena: int | None = None):
        self._lock = threading.RLock()
        self.generation = 0
        self.compactions = 0
        self.erased_ids: set[int] = set()
        self.erased_index = np.zeros(0, np.int64)  # dense indices of erased users, sorted
        self.unfriended: dict[int, set[int]] = {}  # dense index -> former friends (never recommended back)
        self.added = 0  # friendships added since the build (LiveAdjacency's counter)
        self._arena_hint = arena
        self._new: dict[int, int] = {}  # external id -> dense index, for users past the build's snapshot
        self._build_ids = snapshot.ids  # the build's ids, sorted: dense index i <-> _build_ids[i]
        self._install(snapshot, snapshot.num_users, np.asarray(snapshot.ids), None)
        self._recording: list | None = None

    # ------------------------------------------------------------------------------ state

    def _install(self, snap: CSRGraph, n: int, ids: np.ndarray, erased: np.ndarray | None) -> None:
        """Fresh delta over `snap` for users 0..n-1 (users snap.num_users..n-1 start with empty rows)."""
        n0 = snap.num_users
        cap = max(n + n // 32 + 16, 16)
        acap = int(self._arena_hint or max(1 << 20, int(snap.indices.shape[0]) // 16))
        self.snapshot = snap
        self._indptr = np.asarray(snap.indptr, np.int64)
        self._indices = np.asarray(snap.indices)
        self._has_ts = snap.ts is not None
        self._snap_ts = np.asarray(snap.ts) if self._has_ts else np.zeros(0, np.int64)
        self._ovr = np.full(cap, -1, np.int64)
        self._ovr[n0:] = 0  # arena[0] is the empty row
        self._pend = np.full(cap, -1, np.int64)
        self._arena = np.zeros(acap, self._indices.dtype)
        self._arena_ts = np.zeros(acap if self._has_ts else 0, np.int64)
        self._used = 1
        self._deg = np.zeros(cap, np.int64)
        self._deg[:n0] = np.diff(self._indptr)
        self._ids = np.zeros(cap, np.int64)
        self._ids[:n] = ids[:n]
        self._erased = np.zeros(cap, bool)
        if erased is not None:
            self._erased[:erased.size] = erased
        self._n = n
        self._edges = int(snap.num_edges)
        self._publish_view()

    def _publish_view(self) -> None:
        self._view = (R.readonly(self._indptr), R.readonly(self._indices), R.readonly(self._ovr),
                      R.readonly(self._arena))

    def kernel_view(self) -> tuple:
        """The `(indptr, indices, ovr, arena)` tuple kernels read (`pymk.graph.rows`)."""
        return self._view

    def _grow_users(self, need: int) -> None:
        cap = self._ovr.shape[0]
        if need <= cap:
            return
        new_cap = max(need, cap * 2)

        def grown(a, fill):
            out = np.full(new_cap, fill, a.dtype)
            out[:cap] = a
            return out

        self._ovr = grown(self._ovr, 0)  # users past the old capacity start with the empty row
        self._pend = grown(self._pend, -1)
        self._deg = grown(self._deg, 0)
        self._ids = grown(self._ids, 0)
        self._erased = grown(self._erased, False)
        self._publish_view()

    def _grow_arena(self, need: int) -> None:
        cap = self._arena.shape[0]
        new = max(cap * 2, self._used + need)
        arena = np.zeros(new, self._arena.dtype)
        arena[:self._used] = self._arena[:self._used]
        self._arena = arena
        if self._has_ts:
            ts = np.zeros(new, np.int64)
            ts[:self._used] = self._arena_ts[:self._used]
            self._arena_ts = ts
        self._ovr = self._ovr.copy()  # readers of the old view keep offsets valid in the old arena
        self._publish_view()

    # ------------------------------------------------------------------------------ CSRGraph interface

    @property
    def num_users(self) -> int:
        return self._n

    @property
    def capacity(self) -> int:
        return int(self._ovr.shape[0])

    @property
    def num_edges(self) -> int:
        return self._edges

    @property
    def degree(self) -> np.ndarray:
        """(n,) current degrees (a view, kept current by the writer)."""
        return self._deg[:self._n]

    @property
    def kernel_degree(self) -> np.ndarray:
        """(capacity,) int64 current degrees, the array itself (kernels index it by any user)."""
        return self._deg

    @property
    def ids(self) -> np.ndarray:
        """(n,) external ids of dense indices 0..n-1 (users added since the build at the end)."""
        return self._ids[:self._n]

    @property
    def erased(self) -> np.ndarray:
        """(n,) bool: erased accounts (no friendships, never answered, never recommended)."""
        return self._erased[:self._n]

    @property
    def ts(self):
        """The snapshot's edge times (the build's time span; features read only its range)."""
        return self.snapshot.ts

    @property
    def meta(self) -> dict:
        return self.snapshot.meta

    @property
    def graph(self) -> CSRGraph:  # the LiveAdjacency name for the snapshot
        return self.snapshot

    @property
    def delta_entries(self) -> int:
        """Arena entries in use (current rows and the garbage of rewritten ones)."""
        return self._used

    def neighbors(self, u: int) -> np.ndarray:
        return np.asarray(R.row(self._view, np.int64(u)))

    def rows(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Current lists of `nodes` as a CSR. Shapes: (r,) -> ptr (r + 1,), idx (sum,) int64."""
        return R.gather(self, nodes)

    # ------------------------------------------------------------------------------ the writer

    def _add_user(self, uid: int) -> int:
        u = self._n
        self._grow_users(u + 1)
        self._ids[u] = uid
        self._ovr[u] = 0
        self._deg[u] = 0
        self._new[uid] = u
        self._n = u + 1
        if self._recording is not None:
            self._recording.append(("user", uid))
        return u

    def add_users(self, user_ids) -> np.ndarray:
        """Dense indices of these ids, new users created (erased ones: -2)."""
        return self.resolve(user_ids, create=True)

    def apply(self, kind, lo, hi, ts=None) -> np.ndarray:
        """Adds (kind 1) or removes (kind -1) the friendships lo[e]-hi[e] (dense indices) in order.

        Returns (e,) bool: which ones changed the graph (not a repeat, a self-loop, an unknown pair, or a
        pair with an erased user). Raises IndexError for an index outside the graph.
        """
        lo = np.asarray(lo, np.int64).ravel()
        hi = np.asarray(hi, np.int64).ravel()
        kind = np.broadcast_to(np.asarray(kind, np.int8), lo.shape).copy()
        t = np.broadcast_to(np.asarray(time.time() if ts is None else ts, np.float64), lo.shape).astype(np.int64)
        with self._lock:
            self._check_pairs(lo, hi)
            skip = (lo == hi) | self._erased[lo] | self._erased[hi]
            changed = np.zeros(lo.size, bool)
            todo = np.flatnonzero(~skip)
            a, b, k, tt = lo[todo], hi[todo], kind[todo], t[todo]
            ch = self._write_changes(k, a, b, tt)
            changed[todo] = ch
            self.added += int((k[ch] == ADD).sum())
            if self._recording is not None and ch.any():
                self._recording.append(("edges", k[ch], a[ch], b[ch], tt[ch]))
            return changed

    def apply_rows(self, kind, rows, values, ts=None) -> np.ndarray:
        """One end of each change: row rows[e] (a dense index here) gains (kind 1) or loses (kind -1) the
        entry values[e], whatever that names. A shard's living graph holds rows of the users it owns whose
        entries are global user indices (`pymk.graph.shard_graph`). Returns (e,) bool: which rows changed."""
        rows = np.asarray(rows, np.int64).ravel()
        values = np.asarray(values, np.int64).ravel()
        kind = np.broadcast_to(np.asarray(kind, np.int8), rows.shape).copy()
        t = np.broadcast_to(np.asarray(time.time() if ts is None else ts, np.float64), rows.shape).astype(np.int64)
        with self._lock:
            if rows.size and (rows.min() < 0 or rows.max() >= self._n):
                raise IndexError(f"row index outside the graph's {self._n} rows")
            ch = self._write_changes(kind, rows, values, t, half=True)  # `added` counts friendships, not ends
            if self._recording is not None and ch.any():
                self._recording.append(("rows", kind[ch], rows[ch], values[ch], t[ch]))
            return ch

    def warm(self) -> None:
        """Compiles the writer's kernel (a first change would otherwise pay numba's compile time)."""
        e = np.zeros(0, np.int64)
        _apply(self._indptr, self._indices, self._snap_ts, self._ovr, self._pend, self._arena, self._arena_ts,
               self._has_ts, self._used, self._deg, np.zeros(0, np.int8), e, e, e, 0, np.zeros(0, bool), e, 0)
        if self._n:
            self.rows(np.zeros(1, np.int64))  # and the row gather the refresh and invalidations use

    def add(self, lo, hi, ts=None) -> tuple[np.ndarray, np.ndarray]:
        """Adds friendships; returns the ones that were new (`LiveAdjacency`'s interface)."""
        lo, hi = np.asarray(lo, np.int64).ravel(), np.asarray(hi, np.int64).ravel()
        ch = self.apply(ADD, lo, hi, ts)
        return lo[ch], hi[ch]

    def remove(self, lo, hi) -> np.ndarray:
        """Removes friendships (a pair that is not one is left alone); returns which were removed. The
        former friends are remembered in `unfriended`, so neither is recommended back to the other."""
        lo, hi = np.asarray(lo, np.int64).ravel(), np.asarray(hi, np.int64).ravel()
        with self._lock:
            ch = self.apply(REMOVE, lo, hi)
            self.remember_unfriended(lo, hi)
            return ch

    def _on_erased(self, u: int) -> None:
        if self._recording is not None:
            self._recording.append(("erase", u))

    # ------------------------------------------------------------------------------ compaction

    def to_graph(self) -> CSRGraph:
        """The current graph as a new in-memory CSR (same dense indices; new users' ids at the end). O(edges)."""
        with self._lock:
            g, n = self._view, self._n
            ids, arena_ts = self._ids[:n].copy(), self._arena_ts
        return self._fold(g, n, ids, arena_ts)

    def _fold(self, g, n, ids, arena_ts) -> CSRGraph:
        lens = np.empty(n, np.int64)
        _fold_lengths(g, n, lens)
        ptr = np.zeros(n + 1, np.int64)
        np.cumsum(lens, out=ptr[1:])
        idx = np.empty(int(ptr[-1]), g[1].dtype)
        ts = np.empty(idx.size if self._has_ts else 0, np.int64)
        _fold(g, self._snap_ts, arena_ts, self._has_ts, n, ptr, idx, ts)
        meta = {k: v for k, v in self.snapshot.meta.items() if k != "created_at"}
        meta["generation"] = self.generation + 1
        return CSRGraph(ptr, idx, ids, ts if self._has_ts else None, meta)

    def needs_compaction(self, share: float = 0.25) -> bool:
        """Whether the delta holds more than `share` of the snapshot's entries (rows and garbage)."""
        return self._used > max(share * self._indices.shape[0], 1 << 16)

    def compact(self) -> CSRGraph:
        """Folds the delta into a new snapshot generation and swaps it in; returns it.

        The fold reads a frozen copy of the row pointers and the (immutable) rows they name, without the
        lock, so changes keep arriving meanwhile; they are recorded and replayed on the new generation
        under the lock, and the swap is one assignment of the kernel tuple.
        """
        with self._lock:
            g = self._view
            frozen = (g[0], g[1], R.readonly(self._ovr.copy()), g[3])
            n = self._n
            ids = self._ids[:n].copy()
            arena_ts = self._arena_ts
            self._recording = []
        try:
            new = self._fold(frozen, n, ids, arena_ts)
        except BaseException:
            self._recording = None
            raise
        with self._lock:
            replay, self._recording = self._recording, None
            erased = self._erased[:n].copy()
            n_now, ids_now = self._n, self._ids[:self._n].copy()
            self._install(new, n_now, ids_now, None)
            self._erased[:n] = erased
            for op in replay:
                if op[0] == "edges":
                    _, k, a, b, t = op
                    self._write_changes(k, a, b, t)
                elif op[0] == "rows":
                    _, k, a, b, t = op
                    self._write_changes(k, a, b, t, half=True)
                elif op[0] == "erase":
                    self._erased[op[1]] = True
            self.generation += 1
            self.compactions += 1
            return new

    def _write_changes(self, k, a, b, t, *, half: bool = False) -> np.ndarray:
        """Writes changes (checked: in range, no self-loop, no erased user) to the delta and publishes the
        new rows, growing the arena as needed; returns which changed the graph. Holds the lock's caller.
        `half`: only row a[e] changes (entry b[e]; `apply_rows`)."""
        ch = np.zeros(a.size, bool)
        touched = np.empty(2 * a.size, np.int64)
        kernel = _apply_half if half else _apply
        start = 0
        while start < a.size:
            start, used, nt = kernel(self._indptr, self._indices, self._snap_ts, self._ovr, self._pend,
                                     self._arena, self._arena_ts, self._has_ts, self._used, self._deg,
                                     k, a, b, t, start, ch, touched, 0)
            self._used = used
            users = touched[:nt]
            self._ovr[users] = self._pend[users]  # publish: whole rows only
            self._pend[users] = -1
            if start < a.size:
                grow = self._deg[a[start]] + (0 if half else self._deg[b[start]])
                self._grow_arena(int(grow) + 4)
        # a half change is one adjacency entry; edges count both ends
        self._edges += int(k[ch].astype(np.int64).sum()) if not half else 0
        return ch

    def edge_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        return self.to_graph().edge_pairs()
