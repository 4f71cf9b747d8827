"""A sharded graph: the same friends-of-friends answers as one CSR, with lists spread over shards.

A traversal for user A runs on A's home shard: A's list and the lists of A's friends homed or
replicated there are read locally; every other friend's list is fetched from its home shard, in one
batched request per remote shard (for a whole batch of users with the same home shard).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from numba import njit

from pymk.graph.partition import ShardPlan
from pymk.graph.snapshot import SnapshotError

PLAN_FILES = ("partition.npy", "replicas_ptr.npy", "replicas_idx.npy", "shards.json")


class ShardedGraph:
    """Users and lists spread over `plan.shards` shards, read through a shard store.

    Args:
        plan: home shard per user and replicas per shard.
        store: over the same plan: a `ShardRouter` (shard servers, what a model uses), an `InProcessShardStore`
            (the build's lists, frozen) or a `RedisShardStore`.
    """

    def __init__(self, plan: ShardPlan, store, *, batch: int = 512):
        self.plan = plan
        self.store = store
        self.batch = batch
        self.remote_requests = 0
        self.local_requests = 0
        self.traversals = 0

    @property
    def num_users(self) -> int:
        return int(self.plan.home.size)

    def gather(self, shard: int, users: np.ndarray):
        """Everything a batch of users homed on `shard` needs for its 2-hop traversals.

        Returns:
            f_ptr (B + 1,), f_idx: each user's friends; needed (R,) sorted friends of the batch;
            m_ptr (R + 1,), m_idx: their lists, row r for needed[r].
        """
        if hasattr(self.store, "gather"):  # shard servers: two rounds, the second in parallel
            return self._gather_servers(shard, users)
        f_ptr, f_idx = self.store.lists(shard, users)
        self.local_requests += 1
        needed = np.unique(f_idx).astype(np.int64)
        home = self.plan.home[needed]
        local = (home == shard) | np.isin(needed, self.plan.replicas(shard), assume_unique=True)
        parts = []  # (ids, ptr, idx) pieces; local first, then one request per remote shard
        if local.any():
            parts.append((needed[local], *self.store.lists(shard, needed[local])))
            self.local_requests += 1
        remote = needed[~local]
        for t in np.unique(home[~local]).tolist():
            ids = remote[self.plan.home[remote] == t]
            parts.append((ids, *self.store.lists(t, ids)))
            self.remote_requests += 1
        return f_ptr, f_idx, needed, *_assemble(needed, parts)

    def _gather_servers(self, shard: int, users: np.ndarray):
        """`gather` over shard servers (`ShardRouter`): the home shard answers the users' lists and the lists
        it holds of their friends in one call; the other friends' lists come in one parallel round, one
        call per shard. A shard that does not answer leaves its lists out (the router flags it)."""
        first = self.store.gather(shard, users)
        self.local_requests += 1
        if first is None:  # the home shard is down: these users' lists are unknown here
            empty = np.zeros(users.size + 1, np.int64)
            return empty, np.empty(0, np.int64), np.empty(0, np.int64), np.zeros(1, np.int64), np.empty(0, np.int64)
        f_ptr, f_idx, held, h_ptr, h_idx = first
        needed = np.unique(f_idx).astype(np.int64)
        remote = np.setdiff1d(needed, held, assume_unique=True)
        home = self.plan.home[remote]
        calls = [(t, remote[home == t]) for t in np.unique(home).tolist()]
        self.remote_requests += len(calls)
        parts = [(held, h_ptr, h_idx)] if held.size else []
        for (_, ids), got in zip(calls, self.store.lists_many(calls) if calls else [], strict=True):
            parts.append((ids, *got) if got is not None else (ids, np.zeros(ids.size + 1, np.int64),
                                                              np.empty(0, np.int64)))
        return f_ptr, f_idx, needed, *_assemble(needed, parts)


def _assemble(needed: np.ndarray, parts) -> tuple[np.ndarray, np.ndarray]:
    """Orders gathered pieces as rows of `needed` (sorted). Returns m_ptr (R + 1,), m_idx."""
    if not parts:
        return np.zeros(needed.size + 1, np.int64), np.empty(0, np.int64)
    ids = np.concatenate([p[0] for p in parts])
    lens = np.concatenate([np.diff(p[1]) for p in parts])
    data = np.concatenate([np.asarray(p[2], np.int64) for p in parts])
    starts = np.concatenate([p[1][:-1] + off for p, off in zip(
        parts, np.cumsum([0] + [int(p[1][-1]) for p in parts[:-1]]), strict=True)])
    order = np.argsort(ids, kind="stable")
    lens, starts = lens[order], starts[order]
    m_ptr = np.zeros(needed.size + 1, np.int64)
    np.cumsum(lens, out=m_ptr[1:])
    idx = np.empty(int(m_ptr[-1]), np.int64)
    _copy_rows(starts, lens, data, m_ptr, idx)
    return m_ptr, idx


@njit(cache=True)
def _copy_rows(starts, lens, data, m_ptr, out):
    for r in range(starts.shape[0]):
        out[m_ptr[r]:m_ptr[r + 1]] = data[starts[r]:starts[r] + lens[r]]


# ------------------------------------------------------------------------------------ persistence

def save_plan(path: str | Path, plan: ShardPlan, *, budget: float) -> None:
    """Stores the plan beside a graph snapshot (its meta records shards, method and budget)."""
    path = Path(path)
    np.save(path / "partition.npy", plan.home)
    np.save(path / "replicas_ptr.npy", plan.rep_ptr)
    np.save(path / "replicas_idx.npy", plan.rep_idx)
    (path / "shards.json").write_text(json.dumps({"shards": plan.shards, "method": plan.method,
                                                  "replication_budget": budget, "users": int(plan.home.size)}))


def load_plan(path: str | Path, *, expect_shards: int | None = None) -> ShardPlan | None:
    """The plan saved with a snapshot, or None if it was built unsharded; refuses another S."""
    path = Path(path)
    if not (path / "shards.json").exists():
        if expect_shards not in (None, 1):
            raise SnapshotError(f"{path} was built unsharded; it cannot be loaded with {expect_shards} shards")
        return None
    meta = json.loads((path / "shards.json").read_text())
    if expect_shards is not None and meta["shards"] != expect_shards:
        raise SnapshotError(f"{path} was built with {meta['shards']} shards; it cannot be loaded with "
                            f"{expect_shards}: rebuild with `pymk build --shards {expect_shards}`")
    home = np.load(path / "partition.npy", mmap_mode="r")
    if home.shape[0] != meta["users"]:
        raise SnapshotError(f"{path}: partition.npy has {home.shape[0]} users, shards.json says {meta['users']}")
    return ShardPlan(meta["shards"], meta["method"], np.asarray(home),
                     np.load(path / "replicas_ptr.npy"), np.load(path / "replicas_idx.npy"))
