"""The evaluation protocol of the shared datasets README, exactly: split, evaluation users, truth.

    rng = numpy.random.default_rng(20261129); perm = rng.permutation(m)
    test = edges[perm[:int(0.1 m)]]; train = edges[perm[int(0.1 m):]]
    users = sorted unique endpoints of test edges; > 2000 -> sort(rng.choice(users, 2000, replace=False))
Edges are the normalised, lexicographically sorted unique (min, max) pairs over ids re-mapped in
ascending order, which is what `pymk.graph.edges.normalize_edges` produces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pymk.graph.edges import EdgeList

SEED = 20261129
TEST_FRACTION = 0.1
MAX_USERS = 2000


@dataclass
class Split:
    """A train graph and held-out test edges, over the full id space.

    Shapes: users (U,) dense indices, sorted; truth_ptr (U + 1,), truth_idx (T,): user b's test
    partners are truth_idx[truth_ptr[b]:truth_ptr[b + 1]].
    """

    train: EdgeList
    test_lo: np.ndarray
    test_hi: np.ndarray
    users: np.ndarray
    truth_ptr: np.ndarray
    truth_idx: np.ndarray

    def truth(self, b: int) -> np.ndarray:
        return self.truth_idx[self.truth_ptr[b]: self.truth_ptr[b + 1]]


def split_edges(edges: EdgeList, *, seed: int = SEED, test_fraction: float = TEST_FRACTION,
                max_users: int = MAX_USERS) -> Split:
    m = edges.num_edges
    rng = np.random.default_rng(seed)
    perm = rng.permutation(m)
    n_test = int(test_fraction * m)
    test = perm[:n_test]
    train = np.sort(perm[n_test:])  # edges are sorted, so sorted positions keep (lo, hi) order
    test_lo, test_hi = edges.lo[test].astype(np.int64), edges.hi[test].astype(np.int64)
    users = np.unique(np.concatenate([test_lo, test_hi]))
    if users.size > max_users:
        users = np.sort(rng.choice(users, max_users, replace=False))
    # truth: both directions of each test edge, grouped by evaluation user
    a = np.concatenate([test_lo, test_hi])
    b = np.concatenate([test_hi, test_lo])
    pos = np.searchsorted(users, a)
    pos_c = np.minimum(pos, users.size - 1)
    keep = users[pos_c] == a
    rows, partners = pos_c[keep], b[keep]
    order = np.lexsort((partners, rows))
    rows, partners = rows[order], partners[order]
    truth_ptr = np.zeros(users.size + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=users.size), out=truth_ptr[1:])
    ts = edges.ts[train] if edges.ts is not None else None
    train_edges = EdgeList(edges.ids, edges.lo[train], edges.hi[train], ts)
    return Split(train_edges, test_lo, test_hi, users.astype(np.int64), truth_ptr, partners)
