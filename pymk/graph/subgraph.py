"""A snapshot without some of its friendships, made from the CSR itself (no edge list in between).

The ranker's internal splits hold out a share of the build graph's friendships: G' is the graph without
them. Going through an edge list (`edge_pairs`, then `CSRGraph.from_edges`) costs ~80 bytes per friendship
at its peak (10M users x 20 friends: 8 GB over the graph); here the held-out friendships are marked in a
byte mask over the CSR entries and the kept entries copied out: 2 bytes per friendship over G' itself.

Friendship numbers: friendship e is the e-th entry (u, v) with u < v in CSR order, the order of
`CSRGraph.edge_pairs`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pymk.graph.rows import lower_bound
from pymk.graph.snapshot import CSRGraph


@njit(cache=True)
def _mark(indptr, indices, held, mask, held_lo, held_hi):
    # held: sorted friendship numbers; marks both CSR entries of each and records its (lo, hi)
    h = 0
    e = 0
    n = indptr.shape[0] - 1
    for u in range(n):
        if h == held.shape[0]:
            break
        for j in range(indptr[u], indptr[u + 1]):
            v = indices[j]
            if v <= u:
                continue
            if e == held[h]:
                mask[j] = True
                held_lo[h] = u
                held_hi[h] = v
                mask[lower_bound(indices, indptr[v], indptr[v + 1], u)] = True  # u's place in v's sorted row
                h += 1
                if h == held.shape[0]:
                    break
            e += 1


@njit(cache=True)
def _upper_values(indptr, indices, values, out):
    e = 0
    for u in range(indptr.shape[0] - 1):
        for j in range(indptr[u], indptr[u + 1]):
            if indices[j] > u:
                out[e] = values[j]
                e += 1


def upper_values(graph: CSRGraph, values: np.ndarray) -> np.ndarray:
    """Per-entry values (2m,) -> each friendship's value at its (lo, hi) entry (m,), in friendship order."""
    out = np.empty(graph.num_edges, values.dtype)
    _upper_values(graph.indptr, graph.indices, values, out)
    return out


def without_edges(graph: CSRGraph, held: np.ndarray, *, narrow_ts: bool = False,
                  chunk: int = 1 << 24) -> tuple[CSRGraph, np.ndarray, np.ndarray]:
    """G without the friendships numbered `held`; also their (lo, hi) in friendship order.

    Args:
        graph: the snapshot (memory-mapped or not). held: (h,) friendship numbers in [0, m), any order,
            no repeats.
        narrow_ts: keep G' timestamps as int32 where every one fits (seconds before 2038: lossless), half the
            bytes of int64; a G' that only lives for a build step (the ranker's splits) can.
    Returns: (G' with the same users and ids, rows still sorted, timestamps kept; lo (h,) int64; hi (h,) int64)
    """
    held = np.sort(np.asarray(held, np.int64))
    if held.size and (held[0] < 0 or held[-1] >= graph.num_edges or np.any(held[1:] == held[:-1])):
        raise ValueError("held friendship numbers must be distinct and in [0, num_edges)")
    mask = np.zeros(graph.indices.shape[0], np.bool_)
    lo = np.empty(held.size, np.int64)
    hi = np.empty(held.size, np.int64)
    _mark(graph.indptr, graph.indices, held, mask, lo, hi)
    removed = np.bincount(lo, minlength=graph.num_users) + np.bincount(hi, minlength=graph.num_users)
    indptr = np.zeros(graph.num_users + 1, np.int64)
    np.cumsum(np.diff(graph.indptr) - removed, out=indptr[1:])
    np.logical_not(mask, out=mask)
    indices = np.asarray(graph.indices)[mask]
    graph.release_pages()  # a mapped G's pages go back to the page cache as soon as they are read
    ts = None if graph.ts is None else _kept(np.asarray(graph.ts), mask, indices.size, narrow_ts, chunk)
    graph.release_pages()
    return CSRGraph(indptr, indices, np.asarray(graph.ids), ts, {}), lo, hi


def _kept(ts: np.ndarray, keep: np.ndarray, n: int, narrow: bool, chunk: int) -> np.ndarray:
    """ts[keep], as int32 when `narrow` and every value fits, copied a chunk at a time (no full-size temporary)."""
    info = np.iinfo(np.int32)
    if not narrow or ts.dtype == np.int32 or not ts.size or ts.min() < info.min or ts.max() > info.max:
        return ts[keep]
    out = np.empty(n, np.int32)
    at = 0
    for s in range(0, ts.size, chunk):
        part = ts[s:s + chunk][keep[s:s + chunk]]
        out[at:at + part.size] = part
        at += part.size
    return out
