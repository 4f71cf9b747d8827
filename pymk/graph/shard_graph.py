"""One shard's living adjacency: the lists of the users a shard holds, snapshot + delta.

A shard holds the lists of the users homed on it and of the users replicated onto it (`ShardPlan`). Its
snapshot is a CSR over those users only (row i = held[i], entries are global dense user indices), written
by `pymk build --shards S` under `DIR/graph/shards/<s>/` and memory-mapped by the shard's server, so no
process maps more than its shard. Its delta is a `LiveGraph` over the local rows: a friendship A-B changes
row A where A is held and row B where B is held (`LiveGraph.apply_rows`, O(deg) per end), and a user who
joins after the build gets an empty row on its home shard. Compaction is the LiveGraph's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pymk.graph.live import LiveGraph
from pymk.graph.partition import ShardPlan
from pymk.graph.snapshot import CSRGraph, SnapshotError

SHARDS_DIR = "shards"


class ShardGraphError(RuntimeError):
    """A list asked of a shard that does not hold it, or shard files that do not match the plan."""


def held_users(plan: ShardPlan, s: int) -> np.ndarray:
    """Users whose lists shard s holds (homed there or replicated there), sorted. Shape: (h,) int64."""
    return np.union1d(plan.members(s), plan.replicas(s)).astype(np.int64)


def shard_snapshot(graph: CSRGraph, plan: ShardPlan, s: int) -> CSRGraph:
    """Shard s's lists as a CSR over its held users (ids = their global dense indices)."""
    from pymk.graph.rows import gather

    held = held_users(plan, s)
    ptr, idx = gather(graph, held)
    meta = {"shard": s, "shards": plan.shards, "method": plan.method, "graph_users": int(plan.home.size),
            "homed": int((plan.home == s).sum())}
    return CSRGraph(ptr, idx.astype(np.asarray(graph.indices).dtype), held, None, meta)


def save_shards(graph: CSRGraph, plan: ShardPlan, snapshot_dir: str | Path) -> list[int]:
    """Writes every shard's snapshot under `snapshot_dir/shards/<s>/`; returns entries per shard."""
    entries = []
    for s in range(plan.shards):
        g = shard_snapshot(graph, plan, s)
        g.save(Path(snapshot_dir) / SHARDS_DIR / str(s))
        entries.append(int(g.indices.shape[0]))
    (Path(snapshot_dir) / SHARDS_DIR / "shards.json").write_text(json.dumps(
        {"shards": plan.shards, "users": int(plan.home.size), "entries": entries}))
    return entries


def has_shard_files(snapshot_dir: str | Path) -> bool:
    return (Path(snapshot_dir) / SHARDS_DIR / "shards.json").exists()


class ShardGraph:
    """Shard `shard`'s lists (snapshot + delta). Users are global dense indices throughout.

    Args:
        shard: the shard number.
        snapshot: a CSR over the held users (`shard_snapshot`; memory-mapped from disk is fine).
    """

    def __init__(self, shard: int, snapshot: CSRGraph):
        self.shard = shard
        self.snapshot = snapshot
        self.live = LiveGraph(snapshot, arena=max(1 << 16, int(snapshot.indices.shape[0]) // 16))

    @classmethod
    def from_graph(cls, graph: CSRGraph, plan: ShardPlan, s: int) -> ShardGraph:
        return cls(s, shard_snapshot(graph, plan, s))

    @classmethod
    def load(cls, snapshot_dir: str | Path, s: int, *, plan_users: int | None = None) -> ShardGraph:
        """Opens shard s's snapshot from a model's graph directory (memory-mapped)."""
        path = Path(snapshot_dir) / SHARDS_DIR / str(s)
        try:
            snap = CSRGraph.load(path)
        except SnapshotError as exc:
            raise ShardGraphError(f"{exc} (shard files are written by `pymk build --shards S`)") from None
        if snap.meta.get("shard") != s:
            raise ShardGraphError(f"{path}: holds shard {snap.meta.get('shard')}, not shard {s}")
        if plan_users is not None and snap.meta.get("graph_users") != plan_users:
            raise ShardGraphError(f"{path}: written for {snap.meta.get('graph_users')} users, the plan has "
                                  f"{plan_users}: rebuild")
        return cls(s, snap)

    # ------------------------------------------------------------------------------ reads

    @property
    def entries(self) -> int:
        """Adjacency entries held now (snapshot rows and the delta's current rows)."""
        return int(self.live.degree.sum())

    @property
    def held(self) -> np.ndarray:
        """(h,) global indices of the users held, in row order (users added since the build at the end)."""
        return self.live.ids

    def rows_of(self, users) -> np.ndarray:
        """Local rows of global users; -1 where not held. Shapes: (q,) -> (q,)."""
        return self.live.index_of(users)

    def lists(self, users) -> tuple[np.ndarray, np.ndarray]:
        """The current lists of `users` (global indices), all of which this shard must hold.

        Returns ptr (q + 1,) int64, idx (sum,) int64 of global indices, each list ascending."""
        users = np.asarray(users, np.int64).ravel()
        rows = self.rows_of(users)
        if (rows < 0).any():
            missing = users[rows < 0][:5].tolist()
            raise ShardGraphError(f"shard {self.shard} does not hold the lists of users {missing}")
        return self.live.rows(rows)

    # ------------------------------------------------------------------------------ the writer

    def add_users(self, users) -> None:
        """Gives users homed here (joined since the build) an empty list."""
        self.live.add_users(np.asarray(users, np.int64))

    def apply(self, kind, lo, hi, ts=None) -> np.ndarray:
        """Friendships lo[e]-hi[e] (global indices) added (kind 1) or removed (kind -1): each end held here
        changes its row. Returns (e, 2) bool: whether change e changed row lo[e], row hi[e] here (False for
        an end not held here)."""
        lo = np.asarray(lo, np.int64).ravel()
        hi = np.asarray(hi, np.int64).ravel()
        kind = np.broadcast_to(np.asarray(kind, np.int8), lo.shape)
        t = np.broadcast_to(np.asarray(0 if ts is None else ts, np.float64), lo.shape)
        # both ends in one ordered pass: change e writes row lo (entry hi) then row hi (entry lo)
        x = np.stack([lo, hi], 1).ravel()
        y = np.stack([hi, lo], 1).ravel()
        rows = self.rows_of(x)
        keep = rows >= 0
        out = np.zeros(x.size, bool)
        if keep.any():
            out[keep] = self.live.apply_rows(np.repeat(kind, 2)[keep], rows[keep], y[keep], np.repeat(t, 2)[keep])
        return out.reshape(-1, 2)

    def needs_compaction(self, share: float = 0.25) -> bool:
        return self.live.needs_compaction(share)

    def compact(self) -> None:
        self.live.compact()
