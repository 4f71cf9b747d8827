"""Partitioning users into shards, and replicating hot adjacency lists onto the shards that read them.

Partitioners (`partition(graph, S, method)`):
    hash       shard = splitmix64(external id) mod S: stable across runs, machines and Python versions.
    community  METIS k-way (pymetis) balancing adjacency entries per shard (vertex weight = degree),
               minimising a path-weighted cut: an edge A-B costs deg(A) + deg(B), the 2-hop paths
               through it that would cross shards. A greedy pass then restores balance <= 1.10.

Replication (`plan_replicas`): a 2-hop traversal from A reads the adjacency list of each friend B;
placing a copy of B's list on shard s saves deg(B) remote path reads for each friend of B homed on s,
and costs deg(B) entries. So the value per entry of copying B onto s is the number of B's friends on
s. Each shard greedily takes the (B, s) copies of highest value until it holds `budget` x the mean
shard size in extra entries. This replicates hubs where they are read, not everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from pymk.graph.snapshot import CSRGraph

METHODS = ("hash", "community")
DEFAULT_BALANCE = 1.10
DEFAULT_REPLICATION = 0.25


class PartitionError(ValueError):
    """An impossible partitioning request (bad shard count, unknown method)."""


def check_request(num_users: int, shards: int, method: str) -> None:
    if method not in METHODS:
        raise PartitionError(f"unknown partition method {method!r}; choose one of {', '.join(METHODS)}")
    if shards < 1:
        raise PartitionError(f"--shards must be >= 1, got {shards}")
    if shards > num_users:
        raise PartitionError(f"--shards {shards} is more than the {num_users} users of the graph")


def stable_hash(ids: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of int64 ids. Shapes: (n,) int64 -> (n,) uint64."""
    z = np.asarray(ids, np.int64).view(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_partition(graph: CSRGraph, shards: int) -> np.ndarray:
    """Home shard of every user from its external id. Shape: (n,) int32."""
    return (stable_hash(graph.ids) % np.uint64(shards)).astype(np.int32)


def community_partition(graph: CSRGraph, shards: int, *, balance: float = DEFAULT_BALANCE,
                        seed: int = 0) -> np.ndarray:
    """METIS k-way partition, balanced on adjacency entries, path-weighted cut. Shape: (n,) int32."""
    import pymetis

    n = graph.num_users
    if shards == 1:
        return np.zeros(n, np.int32)
    deg = np.asarray(graph.degree, np.int64)
    indptr = np.asarray(graph.indptr, np.int64)
    indices = np.asarray(graph.indices, np.int64)
    src = np.repeat(np.arange(n, dtype=np.int64), deg)
    w = deg[src] + deg[indices]
    # METIS sums weights in 32-bit integers here: scale so the total stays far below 2**31
    scale = max(1, int(np.ceil(w.sum() / 2**29)))
    eweights = np.maximum(1, w // scale).astype(np.int64)
    vweights = np.maximum(deg, 1)  # adjacency entries; isolated users weigh 1 so they spread too
    opts = pymetis.Options(ufactor=int((balance - 1.0) * 1000 * 0.5), seed=seed, contig=False)
    _, parts = pymetis.part_graph(shards, adjacency=pymetis.CSRAdjacency(indptr, indices), vweights=vweights,
                                  eweights=eweights, options=opts)
    home = np.asarray(parts, np.int32)
    return rebalance(graph, home, shards, balance)


@njit(cache=True)
def _rebalance(indptr, indices, home, weight, shards, limit):
    load = np.zeros(shards, np.int64)
    for u in range(home.shape[0]):
        load[home[u]] += weight[u]
    # move users out of overweight shards, cheapest first (fewest friends at home per entry moved),
    # to the underweight shard holding most of their friends
    order = np.argsort(weight)
    cnt = np.zeros(shards, np.int64)
    for _ in range(4):
        moved = False
        for i in range(order.shape[0]):
            u = order[i]
            s = home[u]
            if load[s] <= limit:
                continue
            cnt[:] = 0
            for j in range(indptr[u], indptr[u + 1]):
                cnt[home[indices[j]]] += 1
            best = -1
            for t in range(shards):
                if t != s and load[t] + weight[u] <= limit and (best < 0 or cnt[t] > cnt[best]):
                    best = t
            if best >= 0:
                home[u] = best
                load[s] -= weight[u]
                load[best] += weight[u]
                moved = True
        if not moved:
            break
    return home


def rebalance(graph: CSRGraph, home: np.ndarray, shards: int, balance: float) -> np.ndarray:
    """Moves users until no shard holds more than `balance` x the mean adjacency entries (if it can)."""
    weight = np.maximum(np.asarray(graph.degree, np.int64), 1)
    limit = int(np.floor(balance * weight.sum() / shards))
    return _rebalance(graph.indptr, graph.indices, home.copy(), weight, shards, limit)


def partition(graph: CSRGraph, shards: int, method: str, *, balance: float = DEFAULT_BALANCE) -> np.ndarray:
    """Home shard per dense user index. Shape: (n,) int32."""
    check_request(graph.num_users, shards, method)
    if method == "hash":
        return hash_partition(graph, shards)
    return community_partition(graph, shards, balance=balance)


# ------------------------------------------------------------------------------------ replication

@njit(cache=True)
def _remote_reader_counts(indptr, indices, home, shards):
    """For every user B and shard s != home(B) with friends of B: (B, s, friends of B homed on s)."""
    n = home.shape[0]
    cnt = np.zeros(shards, np.int64)
    out_b = np.empty(indices.shape[0], np.int64)
    out_s = np.empty(indices.shape[0], np.int32)
    out_c = np.empty(indices.shape[0], np.int64)
    m = 0
    for b in range(n):
        for j in range(indptr[b], indptr[b + 1]):
            cnt[home[indices[j]]] += 1
        for j in range(indptr[b], indptr[b + 1]):
            s = home[indices[j]]
            if cnt[s] > 0:
                if s != home[b]:
                    out_b[m] = b
                    out_s[m] = s
                    out_c[m] = cnt[s]
                    m += 1
                cnt[s] = 0
    return out_b[:m], out_s[:m], out_c[:m]


@njit(cache=True)
def _knapsack_take(cost, budget):
    """Greedy in the given (value-per-entry) order: take each item that still fits the budget."""
    take = np.zeros(cost.shape[0], np.bool_)
    left = budget
    for i in range(cost.shape[0]):
        if cost[i] <= left:
            take[i] = True
            left -= cost[i]
    return take


@dataclass
class ShardPlan:
    """Where every adjacency list lives.

    Shapes: home (n,) int32 shard per user; rep_ptr (S + 1,), rep_idx (R,) int64: the users whose
    lists are copied onto shard s are rep_idx[rep_ptr[s]:rep_ptr[s + 1]], sorted.
    """

    shards: int
    method: str
    home: np.ndarray
    rep_ptr: np.ndarray
    rep_idx: np.ndarray

    def replicas(self, s: int) -> np.ndarray:
        return self.rep_idx[self.rep_ptr[s]: self.rep_ptr[s + 1]]

    def members(self, s: int) -> np.ndarray:
        """Users homed on shard s, sorted. Shape: (n_s,) int64."""
        return np.flatnonzero(self.home == s).astype(np.int64)


def plan_replicas(graph: CSRGraph, home: np.ndarray, shards: int, method: str,
                  budget: float = DEFAULT_REPLICATION) -> ShardPlan:
    """Greedy per-shard replica placement under `budget` x (mean shard entries) extra entries each."""
    deg = np.asarray(graph.degree, np.int64)
    per_shard = int(budget * deg.sum() / shards)
    rep_lists = [np.empty(0, np.int64)] * shards
    if budget > 0 and shards > 1:
        b, s, c = _remote_reader_counts(graph.indptr, graph.indices, home.astype(np.int32), shards)
        # highest value per entry first; among equals, smaller lists first (more of them fit)
        order = np.lexsort((deg[b], -c, s))
        b, s = b[order], s[order]
        bounds = np.searchsorted(s, np.arange(shards + 1))
        for t in range(shards):
            cand = b[bounds[t]: bounds[t + 1]]
            rep_lists[t] = np.sort(cand[_knapsack_take(deg[cand], per_shard)])
    rep_ptr = np.zeros(shards + 1, np.int64)
    np.cumsum([x.size for x in rep_lists], out=rep_ptr[1:])
    return ShardPlan(shards, method, home.astype(np.int32), rep_ptr,
                     np.concatenate(rep_lists) if rep_lists else np.empty(0, np.int64))
