"""How well a shard plan keeps 2-hop traversals on one machine (`pymk shard`).

Metrics, over all users A and their friends B (every 2-hop path A -> B -> C reads B's list once):
    two_hop_locality      share of path expansions whose B list is read on A's home shard (B homed
                          there or replicated there), weighted by deg(B) = the paths through B
    two_hop_locality_no_replication   the same without replicas
    edge_locality         share of edges with both ends on one shard
    balance               max / mean adjacency entries homed per shard
    balance_with_replicas max / mean entries held per shard, replicas included
    replication_overhead  (entries + replicated entries) / entries
    cross_shard_requests  remote shards contacted per traversal (one batched request each), mean and p99
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numba import njit

from pymk.graph.partition import ShardPlan
from pymk.graph.snapshot import CSRGraph


@njit(cache=True)
def _traversal_stats(indptr, indices, home, rep_ptr, rep_idx, shards):
    n = home.shape[0]
    local_paths = 0.0
    local_paths_norep = 0.0
    total_paths = 0.0
    local_edges = 0
    requests = np.zeros(n, np.int64)
    seen = np.full(shards, -1, np.int64)
    for a in range(n):
        s = home[a]
        reps = rep_idx[rep_ptr[s]:rep_ptr[s + 1]]
        for j in range(indptr[a], indptr[a + 1]):
            b = indices[j]
            w = indptr[b + 1] - indptr[b]
            total_paths += w
            if home[b] == s:
                local_paths += w
                local_paths_norep += w
                local_edges += 1
                continue
            k = np.searchsorted(reps, b)
            if k < reps.shape[0] and reps[k] == b:
                local_paths += w
            elif seen[home[b]] != a:
                seen[home[b]] = a
                requests[a] += 1
    return local_paths, local_paths_norep, total_paths, local_edges, requests


@dataclass
class LocalityReport:
    shards: int
    method: str
    two_hop_locality: float
    two_hop_locality_no_replication: float
    edge_locality: float
    balance: float
    balance_with_replicas: float
    replication_overhead: float
    cross_shard_requests_mean: float
    cross_shard_requests_p99: float
    users: int
    edges: int

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        rows = [(k, v) for k, v in self.to_dict().items() if k not in ("shards", "method", "users", "edges")]
        head = f"{self.method} sharding, S={self.shards}: {self.users:,} users, {self.edges:,} edges"
        return "\n".join([head] + [f"  {k:<34}{v:>10.4f}" for k, v in rows])


def locality_report(graph: CSRGraph, plan: ShardPlan) -> LocalityReport:
    home = plan.home.astype(np.int64)
    lp, lp0, tp, le, req = _traversal_stats(graph.indptr, graph.indices, home, plan.rep_ptr, plan.rep_idx,
                                            plan.shards)
    deg = np.asarray(graph.degree, np.int64)
    homed = np.bincount(home, weights=deg, minlength=plan.shards)
    held = homed + np.array([deg[plan.replicas(s)].sum() for s in range(plan.shards)])
    total = max(1, deg.sum())
    return LocalityReport(
        shards=plan.shards, method=plan.method,
        two_hop_locality=float(lp / max(tp, 1)), two_hop_locality_no_replication=float(lp0 / max(tp, 1)),
        edge_locality=float(le / total), balance=float(homed.max() / max(homed.mean(), 1e-12)),
        balance_with_replicas=float(held.max() / max(held.mean(), 1e-12)),
        replication_overhead=float(held.sum() / total),
        cross_shard_requests_mean=float(req.mean()) if req.size else 0.0,
        cross_shard_requests_p99=float(np.percentile(req, 99)) if req.size else 0.0,
        users=graph.num_users, edges=graph.num_edges,
    )


def locality_curve(graph: CSRGraph, shards: tuple[int, ...] = (4, 8, 16),
                   methods: tuple[str, ...] = ("hash", "community"), *, config=None) -> list[LocalityReport]:
    """`locality_report` of the graph partitioned each way at each shard count (the build's balance and
    replica budget, `config.sharding` or the defaults): what sharding this graph would give. Counts above the
    number of users are left out."""
    from pymk.graph.partition import DEFAULT_BALANCE, DEFAULT_REPLICATION, partition, plan_replicas

    balance = config.sharding.balance if config is not None else DEFAULT_BALANCE
    budget = config.sharding.replication if config is not None else DEFAULT_REPLICATION
    out = []
    for method in methods:
        for s in shards:
            if 1 < s <= graph.num_users:
                home = partition(graph, s, method, balance=balance)
                out.append(locality_report(graph, plan_replicas(graph, home, s, method, budget)))
    return out
