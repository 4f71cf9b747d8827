"""Normalisation of raw edges into undirected, de-duplicated friendships over dense user indices."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from numba import njit

from pymk.graph.ingest import RawEdges


@dataclass
class EdgeList:
    """Unique undirected edges over dense indices.

    Shapes:
        ids: (n,) int64, sorted external user ids; dense index i <-> ids[i].
        lo, hi: (m,) int32 (int64 past 2**31 users), lo < hi, sorted lexicographically.
        ts: (m,) int64 earliest timestamp seen for the pair, or None.
    """

    ids: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    ts: np.ndarray | None = None

    @property
    def num_users(self) -> int:
        return int(self.ids.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.lo.shape[0])


@dataclass
class IngestReport:
    """What ingestion read, kept and dropped; printed after every ingest and stored in snapshots."""

    source: str
    rows: int
    bad_rows: int = 0
    bad_by_kind: dict[str, int] = field(default_factory=dict)
    bad_examples: list[str] = field(default_factory=list)
    self_loops: int = 0
    duplicates: int = 0
    edges: int = 0
    users: int = 0

    def summary(self) -> str:
        lines = [
            f"ingested {self.source}: {self.rows:,} rows -> {self.edges:,} undirected edges, {self.users:,} users",
            f"  dropped: {self.self_loops:,} self-loops, {self.duplicates:,} duplicate edges "
            f"(reverse or repeated pairs merged)",
        ]
        if self.bad_rows:
            kinds = ", ".join(f"{k}: {v:,}" for k, v in self.bad_by_kind.items())
            lines.append(f"  skipped {self.bad_rows:,} bad rows ({kinds})")
            lines += [f"    e.g. {e}" for e in self.bad_examples]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def dense_ids(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maps external ids to 0..n-1 in ascending id order.

    Returns:
        ids (n,) int64 sorted unique ids; src_idx, dst_idx with the dtype of the index space.
    """
    if src.size == 0:
        e = np.empty(0, np.int64)
        return e, e.astype(np.int32), e.astype(np.int32)
    lo_id = int(min(src.min(), dst.min()))
    hi_id = int(max(src.max(), dst.max()))
    span = hi_id - lo_id + 1
    if lo_id >= 0 and span <= 4 * (src.size + dst.size) + 1024:
        # compact non-negative ids: an O(n) presence table instead of a sort
        present = np.zeros(span, np.bool_)
        present[src - lo_id] = True
        present[dst - lo_id] = True
        ids = np.flatnonzero(present).astype(np.int64) + lo_id
        dtype = np.int32 if ids.size < 2**31 else np.int64
        lookup = (np.cumsum(present, dtype=np.int64) - 1).astype(dtype)
        return ids, lookup[src - lo_id], lookup[dst - lo_id]
    ids, inv = np.unique(np.concatenate([src, dst]), return_inverse=True)
    dtype = np.int32 if ids.size < 2**31 else np.int64
    inv = inv.astype(dtype)
    return ids, inv[: src.size], inv[src.size:]


@njit(cache=True)
def _sorted_unique_pairs(lo, hi, ts, n, has_ts):
    """Sorts (lo, hi) pairs lexicographically and drops repeats, keeping each pair's earliest ts.

    A counting sort by lo, then a small sort per lo-group: O(m log d) instead of a global O(m log m).
    """
    m = lo.shape[0]
    start = np.zeros(n + 1, np.int64)
    for e in range(m):
        start[lo[e] + 1] += 1
    for i in range(n):
        start[i + 1] += start[i]
    pos = start[:-1].copy()
    g_hi = np.empty(m, hi.dtype)
    g_ts = np.empty(m if has_ts else 0, np.int64)
    for e in range(m):
        p = pos[lo[e]]
        g_hi[p] = hi[e]
        if has_ts:
            g_ts[p] = ts[e]
        pos[lo[e]] += 1
    out_lo = np.empty(m, lo.dtype)
    out_hi = np.empty(m, hi.dtype)
    out_ts = np.empty(m if has_ts else 0, np.int64)
    w = 0
    for r in range(n):
        a, b = start[r], start[r + 1]
        if a == b:
            continue
        order = np.argsort(g_hi[a:b], kind="mergesort")
        prev = -1
        for j in range(b - a):
            x = g_hi[a + order[j]]
            if x != prev:
                out_lo[w] = r
                out_hi[w] = x
                if has_ts:
                    out_ts[w] = g_ts[a + order[j]]
                w += 1
                prev = x
            elif has_ts and g_ts[a + order[j]] < out_ts[w - 1]:
                out_ts[w - 1] = g_ts[a + order[j]]
    return out_lo, out_hi, out_ts, w


def _unique_pairs(lo, hi, ts, n, has_ts):
    """`_sorted_unique_pairs`, trimmed: a copy only where repeats were dropped (no second full-size copy)."""
    out_lo, out_hi, out_ts, w = _sorted_unique_pairs(lo, hi, ts, n, has_ts)
    if w == lo.shape[0]:
        return out_lo, out_hi, out_ts
    return out_lo[:w].copy(), out_hi[:w].copy(), out_ts[: w if has_ts else 0].copy()


def normalize_edges(raw: RawEdges, *, release: bool = False) -> tuple[EdgeList, IngestReport]:
    """Drops self-loops, orients each edge as (min, max), de-duplicates (keeping the earliest ts).

    `release`: drop `raw`'s arrays as soon as they are read (its counts stay), so a large file's raw columns
    and its normalised edges are never all held at once."""
    keep = raw.src != raw.dst
    self_loops = int(keep.size - np.count_nonzero(keep))
    if self_loops:
        src, dst = raw.src[keep], raw.dst[keep]
        ts = raw.ts[keep] if raw.ts is not None else None
    else:  # nothing to drop: no copies
        src, dst, ts = raw.src, raw.dst, raw.ts
    n_kept = int(src.size)
    del keep
    if release:
        raw.src = raw.dst = raw.ts = None
    ids, s, d = dense_ids(src, dst)
    del src, dst
    n = ids.size
    lo = np.minimum(s, d)
    hi = np.maximum(s, d, out=s)
    del s, d
    lo, hi, ts_u = _unique_pairs(lo, hi, ts if ts is not None else np.empty(0, np.int64), n, ts is not None)
    edges = EdgeList(ids, lo, hi, ts_u if ts is not None else None)
    report = IngestReport(
        source=raw.source, rows=raw.rows, bad_rows=raw.bad_rows, bad_by_kind=dict(raw.bad_by_kind),
        bad_examples=list(raw.bad_examples), self_loops=self_loops,
        duplicates=int(n_kept - lo.size), edges=int(lo.size), users=int(n),
    )
    return edges, report
