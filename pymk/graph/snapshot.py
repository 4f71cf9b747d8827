"""Graph snapshots: a CSR adjacency over dense indices, the id map, and self-describing metadata.

On disk a snapshot is a directory:
    meta.json    format version, counts, source, creation time, ingest report
    indptr.npy   (n + 1,) int64
    indices.npy  (2m,) int32 (int64 past 2**31 users), each row sorted ascending
    ids.npy      (n,) int64 external ids, sorted; dense index i <-> ids[i]
    ts.npy       (2m,) int64 edge timestamps aligned with indices (only if the input had them)
Arrays load memory-mapped, so opening a snapshot costs almost nothing whatever its size.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit

from pymk import __version__
from pymk.graph.edges import EdgeList

FORMAT = "pymk-graph-snapshot"
FORMAT_VERSION = 1


class SnapshotError(RuntimeError):
    """A snapshot that cannot be used: missing files, another format or version, inconsistent arrays."""


@njit(cache=True)
def _fill_csr(lo, hi, indptr, indices, ts, ts_out, has_ts):
    # Pairs arrive sorted by (lo, hi): each row receives its smaller neighbours (as `hi`) before its
    # larger ones (as `lo`), each group ascending, so rows come out sorted without a second sort.
    pos = indptr[:-1].copy()
    for e in range(lo.shape[0]):
        a = lo[e]
        b = hi[e]
        indices[pos[a]] = b
        indices[pos[b]] = a
        if has_ts:
            ts_out[pos[a]] = ts[e]
            ts_out[pos[b]] = ts[e]
        pos[a] += 1
        pos[b] += 1


@dataclass
class CSRGraph:
    """An undirected graph in CSR form over dense user indices.

    Shapes:
        indptr: (n + 1,) int64; indices: (2m,) int32/int64; ids: (n,) int64; ts: (2m,) int64 or None.
    """

    indptr: np.ndarray
    indices: np.ndarray
    ids: np.ndarray
    ts: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_edges(cls, edges: EdgeList, meta: dict | None = None) -> CSRGraph:
        n = edges.num_users
        deg = np.bincount(edges.lo, minlength=n) + np.bincount(edges.hi, minlength=n)
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(deg, out=indptr[1:])
        indices = np.empty(int(indptr[-1]), edges.lo.dtype)
        has_ts = edges.ts is not None
        ts_out = np.empty(indices.size if has_ts else 0, np.int64)
        ts_in = edges.ts if has_ts else np.empty(0, np.int64)
        _fill_csr(edges.lo, edges.hi, indptr, indices, ts_in, ts_out, has_ts)
        return cls(indptr, indices, edges.ids, ts_out if has_ts else None, dict(meta or {}))

    @property
    def num_users(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @property
    def num_edges(self) -> int:
        return int(self.indices.shape[0] // 2)

    @property
    def degree(self) -> np.ndarray:
        """(n,) int64, read-only; computed once per `indptr` (a request must not pay O(users) for it)."""
        cached = self.__dict__.get("_degree")
        if cached is None or cached[0] is not self.indptr:
            deg = np.diff(self.indptr)
            deg.flags.writeable = False
            cached = self.__dict__["_degree"] = (self.indptr, deg)
        return cached[1]

    def neighbors(self, i: int) -> np.ndarray:
        return self.indices[self.indptr[i]: self.indptr[i + 1]]

    def index_of(self, user_ids) -> np.ndarray:
        """Dense indices of external ids; -1 for ids not in the graph. Shapes: (q,) -> (q,) int64."""
        q = np.asarray(user_ids, dtype=np.int64).ravel()
        if self.ids.size == 0:
            return np.full(q.shape, -1, np.int64)
        pos = np.searchsorted(self.ids, q)
        pos_c = np.minimum(pos, self.ids.size - 1)
        return np.where(self.ids[pos_c] == q, pos_c, -1).astype(np.int64)

    def edge_pairs(self, *, with_ts: bool = False):
        """Each undirected edge once as (lo, hi) dense indices, sorted. Shapes: (m,), (m,). `with_ts`: also
        each edge's timestamp (m,), read at its place in lo's row (None without timestamps)."""
        src = np.repeat(np.arange(self.num_users, dtype=self.indices.dtype), self.degree)
        keep = src < self.indices
        if not with_ts:
            return src[keep], np.asarray(self.indices[keep])
        ts = None if self.ts is None else np.asarray(self.ts)[keep]
        return src[keep], np.asarray(self.indices[keep]), ts

    def release_pages(self) -> None:
        """Hands the pages of a memory-mapped snapshot back to the page cache (no copy, nothing changes):
        a stage that has swept the whole graph calls it, so the process's resident set holds what it
        computes rather than the file it read. In-memory arrays are left alone."""
        import mmap

        for arr in (self.indptr, self.indices, self.ids, self.ts):
            m = getattr(arr, "_mmap", None)
            if m is not None and hasattr(m, "madvise"):
                m.madvise(mmap.MADV_DONTNEED)

    # ------------------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "indptr.npy", self.indptr)
        np.save(path / "indices.npy", self.indices)
        np.save(path / "ids.npy", self.ids)
        if self.ts is not None:
            np.save(path / "ts.npy", self.ts)
        elif (path / "ts.npy").exists():
            (path / "ts.npy").unlink()
        meta = {
            **self.meta,
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "pymk_version": __version__,
            "num_users": self.num_users,
            "num_edges": self.num_edges,
            "index_dtype": str(self.indices.dtype),
            "has_ts": self.ts is not None,
        }
        if self.ts is not None and len(self.ts):  # the span the ranker's time features are scaled by
            meta["ts_span"] = [int(np.min(self.ts)), int(np.max(self.ts))]
        meta.setdefault("created_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        (path / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        self.meta = meta
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = True) -> CSRGraph:
        """Opens a snapshot directory (memory-mapped by default); refuses another format version."""
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.exists():
            raise SnapshotError(f"{path} is not a pymk graph snapshot: {meta_path.name} is missing")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise SnapshotError(f"{meta_path}: format {meta.get('format')!r} is not {FORMAT!r}")
        if meta.get("format_version") != FORMAT_VERSION:
            raise SnapshotError(
                f"{meta_path}: snapshot format version {meta.get('format_version')} cannot be read by "
                f"pymk {__version__}, which reads version {FORMAT_VERSION}; rebuild it with `pymk build`")
        mode = "r" if mmap else None
        try:
            indptr = np.load(path / "indptr.npy", mmap_mode=mode)
            indices = np.load(path / "indices.npy", mmap_mode=mode)
            ids = np.load(path / "ids.npy", mmap_mode=mode)
            ts = np.load(path / "ts.npy", mmap_mode=mode) if meta.get("has_ts") else None
        except FileNotFoundError as exc:
            raise SnapshotError(f"{path}: snapshot is incomplete: {exc.filename} is missing") from None
        n = meta["num_users"]
        if indptr.shape != (n + 1,) or ids.shape != (n,) or indices.shape[0] != int(indptr[-1]):
            raise SnapshotError(f"{path}: array shapes disagree with meta.json (num_users={n})")
        return cls(indptr, indices, ids, ts, meta)
