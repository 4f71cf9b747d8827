"""A shard server: one process per graph shard, holding only that shard's lists (snapshot + delta).

It answers batched partial queries of the ranking tier (`pymk.serving.shard_router`): the current lists of
users it holds, PPR pushes over them, its users' embeddings and feature rows and the nearest users in its ANN
shard (`pymk.serving.shard_users`), and applies the changes that touch them (the ends it holds, new users
homed here). Its
snapshot is memory-mapped from `DIR/graph/shards/<s>/` (written by `pymk build --shards S`), so a server
maps only its shard's adjacency entries plus the replicas placed on it. The delta compacts in a background
thread once it holds a quarter of the snapshot's entries.

In process it is a plain object; on Ray the same class runs as an actor (`ray_shard_server`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from pymk.graph.shard_graph import ShardGraph
from pymk.serving.shard_users import ShardUsers


def process_memory() -> dict:
    """This process's resident bytes, its resident file-backed bytes, and the bytes of adjacency files it maps
    (`.npy` files under a model's `graph/` directory, whole graph or a shard's): Linux /proc; zeros elsewhere."""
    rss = resident_file = graph_mapped = 0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("RssFile:"):
                resident_file = int(line.split()[1]) * 1024
        for line in Path("/proc/self/maps").read_text().splitlines():
            parts = line.split(maxsplit=5)
            path = parts[5] if len(parts) == 6 else ""
            if "/graph/" in path and path.endswith(".npy") and Path(path).name in ("indptr.npy", "indices.npy"):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                graph_mapped += hi - lo
    except OSError:
        pass
    return {"rss_bytes": rss, "rss_file_bytes": resident_file, "graph_mapped_bytes": graph_mapped}


class ShardServer:
    """Shard `shard` of the model at `model_dir` (or of a ready `ShardGraph`, for tests and in process).

    Args:
        model_dir: a model built with `--shards S` (its `graph/shards/<shard>/` is opened memory-mapped).
        shard: which shard.
        graph: a ready `ShardGraph` instead of the files.
        compact_share: compact once the delta holds this share of the snapshot's entries.
        users: also hold the rows of the users homed here (`ShardUsers`: embeddings, ANN shard, features).
    """

    def __init__(self, model_dir: str | os.PathLike | None, shard: int, *, graph: ShardGraph | None = None,
                 plan_users: int | None = None, compact_share: float = 0.25, users: bool = True):
        self.shard = shard
        self.graph = graph if graph is not None else ShardGraph.load(Path(model_dir) / "graph", shard,
                                                                    plan_users=plan_users)
        self.users = ShardUsers.load_for(Path(model_dir), shard) if model_dir is not None and users \
            else ShardUsers.empty()
        self.compact_share = compact_share
        self.boot = os.urandom(8).hex()  # a restarted server has a new one: the router replays its changes
        self.calls = 0
        self.applied = 0
        self._compacting: threading.Thread | None = None
        self._held = None  # the PPR push's view of the held users (`ppr_push`), rebuilt when users join
        self.graph.live.warm()

    def ping(self) -> str:
        return self.boot

    def lists(self, users: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
        """Current lists of held users (global indices). Returns (boot, ptr (q + 1,), idx (sum,) int64)."""
        self.calls += 1
        return (self.boot, *self.graph.lists(users))

    def describe(self) -> tuple[str, dict]:
        """(boot, what this shard serves besides lists: `ShardUsers.describe`)."""
        return self.boot, self.users.describe()

    def gather(self, users: np.ndarray, rows: bool = False) -> tuple:
        """The first round of a 2-hop traversal for users homed here, in one call: their lists, and the lists
        of their friends this shard holds (homed or replicated here); with `rows`, also the users' query
        vectors and feature rows.

        Returns (boot, f_ptr (q + 1,), f_idx, held (h,) sorted friends held here, h_ptr (h + 1,), h_idx), then
        with `rows` vec (q, d) float32, has (q,) bool, feat (q, F) float32 (`ShardUsers.vectors`, `features`)."""
        self.calls += 1
        f_ptr, f_idx = self.graph.lists(users)
        needed = np.unique(f_idx)
        held = needed[self.graph.rows_of(needed) >= 0]
        out = (self.boot, f_ptr, f_idx, held, *self.graph.lists(held))
        return out + (*self.users.vectors(users), self.users.features(users)) if rows else out

    def search(self, queries: np.ndarray, k: int) -> tuple[str, np.ndarray, np.ndarray]:
        """The k users homed here nearest each query (`ShardUsers.search`): (boot, scores (B, k'), labels)."""
        self.calls += 1
        return (self.boot, *self.users.search(queries, k))

    def rows(self, list_users: np.ndarray, feat_users: np.ndarray) -> tuple:
        """Lists of `list_users` (held here) and feature rows of `feat_users` (homed here), in one call.
        Returns (boot, ptr, idx, feat (f, F) float32)."""
        self.calls += 1
        list_users = np.asarray(list_users, np.int64)
        ptr, idx = self.graph.lists(list_users) if list_users.size else (np.zeros(1, np.int64), np.zeros(0, np.int64))
        return self.boot, ptr, idx, self.users.features(feat_users)

    def apply(self, kind: np.ndarray, lo: np.ndarray, hi: np.ndarray, ts: np.ndarray | None = None,
              new_users: np.ndarray | None = None) -> tuple[str, int, np.ndarray]:
        """Users homed here who joined (`new_users`), then friendships added (kind 1) or removed (-1) in
        order; each end held here changes its list. Returns (boot, rows changed, (e, 2) bool: which ends of
        each change changed a row here)."""
        if new_users is not None and len(new_users):
            self.graph.add_users(new_users)
        flags = self.graph.apply(kind, lo, hi, ts) if len(lo) else np.zeros((0, 2), bool)
        changed = int(flags.sum())
        self.applied += int(len(lo))
        if self.graph.needs_compaction(self.compact_share) and (self._compacting is None or
                                                                 not self._compacting.is_alive()):
            self._compacting = threading.Thread(target=self.graph.compact, name=f"compact-shard-{self.shard}",
                                                daemon=True)
            self._compacting.start()
        return self.boot, changed, flags

    def ppr_push(self, key: np.ndarray, val: np.ndarray, alpha: float, eps: float) -> tuple:
        """Forward push (`pymk.candidates.ppr_push`) of residual entries on users held here, continued over
        this shard's lists while the mass stays on users it holds.

        Args: key (e,) int64 entries (query << 40 | user), val (e,) float64 residual mass.
        Returns (boot, pushed (key, gain, deg), rest (key, val, deg)): the estimate gained per entry, and the
        residual left (on users held elsewhere, degree -1, or below eps * degree here).
        """
        from pymk.candidates.ppr_push import HeldLists

        self.calls += 1
        live = self.graph.live
        if self._held is None or self._held.ids.size != live.num_users:  # users joined: their rows too
            self._held = HeldLists(live, np.array(live.ids), scratch=f"ppr-shard-{self.shard}")
        return (self.boot, *self._held.push(key, val, alpha=alpha, eps=eps, aggregate=False))

    def lists_push(self, users: np.ndarray, key: np.ndarray, val: np.ndarray, alpha: float, eps: float) -> tuple:
        """`lists` of `users` and `ppr_push` of (key, val) in one call (the ranking tier's second round).
        Returns (boot, ptr, idx, pushed, rest)."""
        users = np.asarray(users, np.int64)
        ptr, idx = self.graph.lists(users) if users.size else (np.zeros(1, np.int64), np.zeros(0, np.int64))
        if len(key):
            _, pushed, rest = self.ppr_push(key, val, alpha, eps)
        else:
            self.calls += 1
            none = (np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64))
            pushed, rest = none, none
        return self.boot, ptr, idx, pushed, rest

    def top_degree(self, m: int) -> tuple[str, np.ndarray, np.ndarray]:
        """The m users held here (homed or replicated) with the most friends now, ties by index: (boot,
        users, degrees), most first. Any user among the m with the most friends of the whole graph is among
        the m of every shard that holds it, so merging the shards' answers gives the graph's."""
        self.calls += 1
        held = np.asarray(self.graph.held, np.int64)
        deg = np.asarray(self.graph.live.degree[:held.size], np.int64)
        top = np.lexsort((held, -deg))[:m]
        return self.boot, held[top], deg[top]

    def stats(self) -> dict:
        g = self.graph
        return {"shard": self.shard, "boot": self.boot, "held_users": int(g.live.num_users), "entries": g.entries,
                "snapshot_entries": int(g.snapshot.indices.shape[0]), "delta_entries": int(g.live.delta_entries),
                "generation": int(g.live.generation), "calls": self.calls, "applied": self.applied,
                "pid": os.getpid(), "node": _node_id(), "user_rows_bytes": self.users.describe()["bytes"],
                **process_memory()}


def _node_id() -> str | None:
    """The Ray node this server runs on (None outside Ray)."""
    import sys

    ray = sys.modules.get("ray")  # never imported here for a server in process
    try:
        return ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - outside a Ray worker
        return None


def ray_shard_server(*, max_restarts: int = -1, num_cpus: float = 0.25):
    """The `ShardServer` class as a Ray actor class: restarted by Ray when its process dies (it reloads its
    shard from the model directory; the router replays the changes it applied since)."""
    import ray

    return ray.remote(max_restarts=max_restarts, max_task_retries=0, num_cpus=num_cpus)(ShardServer)
