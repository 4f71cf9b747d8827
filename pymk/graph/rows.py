"""How every graph kernel reads adjacency: a snapshot CSR plus the rows the live delta rewrote.

A kernel takes one tuple `g = (indptr, indices, ovr, arena)`:
    indptr (n0 + 1,) int64, indices (2m,) int32/int64: the immutable snapshot (memory-mapped);
    ovr (cap,) int64: for user u, -1 = its row is the snapshot's, else the offset of its current row in
        `arena` (users past the snapshot always have one); empty for a plain snapshot;
    arena (a,) same dtype as indices: rows as [length, neighbours ascending...], written once and never
        changed (a change writes a new copy and moves `ovr[u]`), so a reader holding the tuple always sees
        whole rows.
`row(g, u)` and `deg(g, u)` are inlined into the kernels; a plain snapshot pays one length check per row.
`view(graph)` gives the tuple of a `CSRGraph` or a `LiveGraph`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_EMPTY_OVR = np.full(0, -1, np.int64)


def readonly(a: np.ndarray) -> np.ndarray:
    """A read-only plain-ndarray view (one numba type for memory-mapped and in-memory arrays alike)."""
    v = np.asarray(a).view()
    v.flags.writeable = False
    return v


def view(graph) -> tuple:
    """The kernel tuple `(indptr, indices, ovr, arena)` of a CSRGraph or LiveGraph."""
    if hasattr(graph, "kernel_view"):
        return graph.kernel_view()
    cached = graph.__dict__.get("_kernel_view")
    if cached is None or cached[0] is not graph.indices:
        indices = readonly(graph.indices)
        g = (readonly(np.asarray(graph.indptr, np.int64)), indices, readonly(_EMPTY_OVR),
             readonly(np.zeros(0, indices.dtype)))
        cached = graph.__dict__["_kernel_view"] = (graph.indices, g)
    return cached[1]


def capacity(graph) -> int:
    """Users a kernel workspace must cover (a live graph's capacity: indices of users added later)."""
    return int(getattr(graph, "capacity", graph.num_users))


@njit(inline="always")
def span(g, u):
    """(in_arena, start, end): where user u's row lies, in g[3] (the arena) or g[1] (the snapshot), without
    making a slice (a slice costs a reference count in the hottest loops)."""
    ovr = g[2]
    if u < ovr.shape[0]:
        o = ovr[u]
        if o >= 0:
            return True, o + 1, o + 1 + np.int64(g[3][o])
    return False, np.int64(g[0][u]), np.int64(g[0][u + 1])


@njit(inline="always")
def row(g, u):
    """User u's neighbours, ascending (a slice of the arena or of the snapshot)."""
    in_arena, s, e = span(g, u)
    if in_arena:
        return g[3][s:e]
    return g[1][s:e]


@njit(inline="always")
def lower_bound(a, lo, hi, x):
    """The first position in a[lo:hi] (ascending) whose value is >= x, or hi."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(inline="always")
def deg(g, u):
    _, s, e = span(g, u)
    return e - s


@njit(inline="always")
def nusers(g):
    """Size of index space: users of the snapshot or the live capacity, whichever is larger."""
    return max(g[0].shape[0] - 1, g[2].shape[0])


@njit(cache=True)
def _gather(g, rows, out_ptr, out_idx):
    for i in range(rows.shape[0]):
        r = row(g, rows[i])
        out_idx[out_ptr[i]:out_ptr[i + 1]] = r


@njit(cache=True)
def _lengths(g, rows, out):
    for i in range(rows.shape[0]):
        out[i] = deg(g, rows[i])


def gather(graph, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The current lists of `rows` as a new CSR. Shapes: rows (r,) -> ptr (r + 1,) int64, idx (sum,) int64.
    A tier's `RequestGraph` answers with the lists it fetched (global indices)."""
    if hasattr(graph, "global_lists"):
        return graph.global_lists(rows)
    g = view(graph)
    rows = np.asarray(rows, np.int64)
    lens = np.empty(rows.size, np.int64)
    _lengths(g, rows, lens)
    ptr = np.zeros(rows.size + 1, np.int64)
    np.cumsum(lens, out=ptr[1:])
    idx = np.empty(int(ptr[-1]), g[1].dtype)
    _gather(g, rows, ptr, idx)
    return ptr, idx.astype(np.int64, copy=False)
