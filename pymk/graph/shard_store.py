"""Where a sharded graph's adjacency lists live: in process (embedded default) or in Redis.

A store answers `lists(shard, users)`: the adjacency lists of `users` held on `shard` (homed there or
replicated there), in one request. Every request is counted, so a traversal's fan-out is measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from pymk.graph.partition import ShardPlan
from pymk.graph.snapshot import CSRGraph

REDIS_FORMAT_VERSION = 1


class ShardStoreError(RuntimeError):
    """A store that cannot answer: a list asked of a shard that does not hold it, a mismatched store."""


@dataclass
class StoreStats:
    requests: int = 0  # round trips (one per shard asked, per traversal batch)
    lists: int = 0
    entries: int = 0
    per_shard: dict = field(default_factory=dict)
    ppr_rounds: int = 0  # rounds of PPR push calls (the ranking tier's `distributed_ppr`)
    ppr_left: float = 0.0  # PPR mass left unpushed when the tier's rounds ran out (its L1 error bound, summed)

    def count(self, shard: int, lists: int, entries: int) -> None:
        self.requests += 1
        self.lists += lists
        self.entries += entries
        self.per_shard[shard] = self.per_shard.get(shard, 0) + 1


@njit(cache=True)
def _gather(indptr, indices, rows, out_ptr, out_idx):
    for i in range(rows.shape[0]):
        a, b = indptr[rows[i]], indptr[rows[i] + 1]
        out_idx[out_ptr[i]:out_ptr[i + 1]] = indices[a:b]


def gather_rows(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lists of `rows` of a CSR as a new CSR. Shapes: rows (r,) -> ptr (r + 1,), idx (sum,)."""
    lens = indptr[rows + 1] - indptr[rows]
    ptr = np.zeros(rows.size + 1, np.int64)
    np.cumsum(lens, out=ptr[1:])
    idx = np.empty(int(ptr[-1]), indices.dtype)
    _gather(indptr, indices, rows.astype(np.int64), ptr, idx)
    return ptr, idx


class InProcessShardStore:
    """Each shard's held lists (homed + replicated) as its own CSR over global user indices."""

    def __init__(self, graph: CSRGraph, plan: ShardPlan):
        self.plan = plan
        self.stats = StoreStats()
        self._held = []
        for s in range(plan.shards):
            held = np.union1d(plan.members(s), plan.replicas(s)).astype(np.int64)
            ptr, idx = gather_rows(graph.indptr, graph.indices, held)
            self._held.append((held, ptr, idx))

    def entries(self, s: int) -> int:
        return int(self._held[s][1][-1])

    def lists(self, shard: int, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        held, ptr, idx = self._held[shard]
        pos = np.searchsorted(held, users)
        if users.size and (pos.max() >= held.size or not np.array_equal(held[np.minimum(pos, held.size - 1)],
                                                                         users)):
            raise ShardStoreError(f"shard {shard} does not hold the lists of all users asked of it")
        out = gather_rows(ptr, idx, pos)
        self.stats.count(shard, users.size, int(out[0][-1]))
        return out


class RedisShardStore:
    """Adjacency lists in Redis, one key per (shard, user), hash-tagged by shard.

    Key `{prefix}:{s<shard>}:adj:<user>` holds the user's neighbours (dense indices) as little-endian
    int32 (int64 past 2**31 users); the `{s<shard>}` hash tag keeps a shard's keys in one Redis Cluster
    slot, so a shard's lists come back from one node in one MGET round trip. `{prefix}:meta` records
    the plan's shape; a store written for another plan is refused.
    """

    def __init__(self, client, prefix: str = "pymk", *, plan: ShardPlan | None = None):
        self.r = client
        self.prefix = prefix
        self.stats = StoreStats()
        self.plan = plan
        meta = self.r.get(f"{prefix}:meta")
        self.meta = json.loads(meta) if meta else None
        if plan is not None and self.meta is not None:
            self._check(plan)

    def _check(self, plan: ShardPlan) -> None:
        m = self.meta
        if m.get("version") != REDIS_FORMAT_VERSION or m.get("shards") != plan.shards or \
                m.get("users") != int(plan.home.size):
            raise ShardStoreError(
                f"Redis store {self.prefix!r} holds {m.get('shards')} shards over {m.get('users')} users "
                f"(format {m.get('version')}); the model has {plan.shards} shards over {plan.home.size} users: "
                f"publish it again")

    def key(self, shard: int, user: int) -> str:
        return f"{self.prefix}:{{s{shard}}}:adj:{user}"

    def publish(self, graph: CSRGraph, plan: ShardPlan, *, batch: int = 5000, progress=None) -> int:
        """Writes every held list (pipelined, idempotent: keys are overwritten). Returns keys written."""
        dtype = "<i4" if graph.num_users < 2**31 else "<i8"
        written = 0
        for s in range(plan.shards):
            held = np.union1d(plan.members(s), plan.replicas(s)).astype(np.int64)
            for i in range(0, held.size, batch):
                pipe = self.r.pipeline(transaction=False)
                for u in held[i:i + batch].tolist():
                    pipe.set(self.key(s, u), np.asarray(graph.neighbors(u), dtype).tobytes())
                pipe.execute()
                written += min(batch, held.size - i)
                if progress:
                    progress(min(batch, held.size - i))
        self.meta = {"version": REDIS_FORMAT_VERSION, "shards": plan.shards, "users": graph.num_users,
                     "dtype": dtype, "method": plan.method}
        self.r.set(f"{self.prefix}:meta", json.dumps(self.meta))
        self.plan = plan
        return written

    def lists(self, shard: int, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.meta is None:
            raise ShardStoreError(f"Redis store {self.prefix!r} is empty: run publish first")
        vals = self.r.mget([self.key(shard, int(u)) for u in users]) if users.size else []
        missing = [int(u) for u, v in zip(users, vals, strict=True) if v is None]
        if missing:
            raise ShardStoreError(f"shard {shard} in Redis lacks the lists of users {missing[:5]}")
        arrs = [np.frombuffer(v, self.meta["dtype"]) for v in vals]
        ptr = np.zeros(len(arrs) + 1, np.int64)
        np.cumsum([a.size for a in arrs], out=ptr[1:])
        idx = np.concatenate(arrs).astype(np.int64) if arrs else np.empty(0, np.int64)
        self.stats.count(shard, len(arrs), int(ptr[-1]))
        return ptr, idx
