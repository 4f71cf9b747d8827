"""The ranking tier's view of the shard servers: routing, parallel fan-out, changes, faults.

`ShardRouter` answers the shard-store interface the sharded traversal reads (`lists(shard, users)`, and
`lists_many` for one parallel round of calls, one per shard), so friends-of-friends runs unchanged over
shard servers in process or on Ray. It routes every change to the shards that hold an end of it (home
and replica shards), gives users who join after the build a home shard (hash of their id), and keeps the
changes each shard applied so that a server that restarts (Ray restarts a dead actor from the model
directory) gets them again before it answers.

Faults: a call that fails or passes its deadline (`timeout_s`) marks the shard degraded; the traversal
goes on without its lists and the request is flagged `degraded` with the shard named ("shard 2").
"""

from __future__ import annotations

import threading

import numpy as np

from pymk.graph.partition import ShardPlan, stable_hash
from pymk.graph.shard_store import StoreStats, gather_rows

READS = ("lists", "gather", "lists_push", "ppr_push", "search", "rows")  # a request goes on without them, flagged


def _is_timeout(exc) -> bool:
    return type(exc).__name__ == "GetTimeoutError"


class ShardUnavailable(RuntimeError):
    """A shard server that did not answer (dead, restarting, or past its deadline)."""

    def __init__(self, shard: int, why: str):
        super().__init__(f"shard {shard} unavailable: {why}")
        self.shard = shard


class ShardRouter:
    """Routes to `servers[s]` for shard s: `ShardServer` objects (in process) or Ray actor handles.

    Args:
        plan: home shard per user and replicas per shard (`plan.home` grows as users join).
        servers: one per shard.
        timeout_s: per-call deadline for Ray calls.
    """

    def __init__(self, plan: ShardPlan, servers: list, *, timeout_s: float = 2.0):
        if len(servers) != plan.shards:
            raise ValueError(f"{len(servers)} shard servers for {plan.shards} shards")
        self.plan = plan
        self.servers = servers
        self.timeout_s = timeout_s
        self.remote = hasattr(servers[0], "lists") and hasattr(servers[0].lists, "remote")
        self.stats = StoreStats()
        self.boots: list[str | None] = [None] * plan.shards
        self.history: list[list] = [[] for _ in range(plan.shards)]  # changes sent, replayed after a restart
        self.failures = [0] * plan.shards
        self.replays = [0] * plan.shards
        self._lock = threading.Lock()
        self._replaying = [threading.Lock() for _ in range(plan.shards)]  # one replay per restart
        self._degraded: set[int] = set()
        self._changed = np.zeros(plan.home.size, bool)  # lists changed since the build (`DeltaOverlay`)

    # ------------------------------------------------------------------------------ calls

    def _send(self, s: int, method: str, args: tuple):
        """Starts a call: a Ray object ref, or the call itself to run in `_wait` (in process)."""
        return getattr(self.servers[s], method).remote(*args) if self.remote else None

    def _get(self, s: int, pending, method: str, args: tuple, timeout: float):
        try:
            if self.remote:
                import ray

                return ray.get(pending, timeout=timeout)
            return getattr(self.servers[s], method)(*args)
        except Exception as exc:  # noqa: BLE001 - a dead actor, a deadline, a failed call: the shard is out
            self.failures[s] += 1
            if method in READS:  # a read the request does without: flag it
                with self._lock:
                    self._degraded.add(s)
            raise ShardUnavailable(s, f"{type(exc).__name__}: {exc}"[:200]) from exc

    def _wait(self, s: int, pending, method: str, args: tuple, *, timeout: float | None = None):
        """The reply of a started call, without its boot id. A server that restarted since its last reply
        (a new boot id, or a failed call after which it answers with one) first gets every change it had
        applied (`_replay`), then the call is made again."""
        timeout = self.timeout_s if timeout is None else timeout
        try:
            reply = self._get(s, pending, method, args, timeout)
        except ShardUnavailable as exc:
            if _is_timeout(exc.__cause__) or not self._restarted(s):  # a slow server costs one deadline
                raise
            reply = (None,)
        if reply[0] != self.boots[s] and self.boots[s] is not None:
            seen = self.boots[s]
            with self._replaying[s]:  # requests and the stream worker may find the restart at once
                if self.boots[s] == seen:
                    self._replay(s)
            reply = self._get(s, self._send(s, method, args), method, args, timeout)
            if reply[0] != self.boots[s]:
                raise ShardUnavailable(s, "restarted again during its replay")
        self.boots[s] = reply[0]
        return reply[1:]

    def _restarted(self, s: int) -> bool:
        """After a failed call: whether the server answers now under a new boot id (it restarted)."""
        if self.boots[s] is None:
            return False
        try:
            boot = self._get(s, self._send(s, "ping", ()), "ping", (), self.timeout_s)
        except ShardUnavailable:
            return False
        return boot != self.boots[s]

    def _call(self, s: int, method: str, *args, timeout: float | None = None):
        return self._wait(s, self._send(s, method, args), method, args, timeout=timeout)

    def _replay(self, s: int) -> None:
        """Sends a restarted shard server every change batch it had applied, in order. Replaying a batch
        it already has changes nothing (each change sets its pair's state; the last one wins). The history
        holds every change since the build (a restarted server reopens the build's snapshot): it is bounded
        by the next `pymk build` / `pymk update`, which folds the log in."""
        self.replays[s] += 1
        boot = None
        for batch in self.history[s]:
            boot = self._get(s, self._send(s, "apply", batch), "apply", batch, max(self.timeout_s, 30.0))[0]
        if boot is None:
            boot = self._get(s, self._send(s, "ping", ()), "ping", (), max(self.timeout_s, 30.0))
        self.boots[s] = boot

    # ------------------------------------------------------------------------------ the store interface

    def lists(self, shard: int, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lists of `users` held on `shard` (raises `ShardUnavailable`)."""
        users = np.asarray(users, np.int64)
        ptr, idx = self._call(shard, "lists", users)
        self.stats.count(shard, users.size, int(ptr[-1]))
        return ptr, idx

    def gather(self, shard: int, users: np.ndarray, rows: bool = False):
        """`ShardServer.gather` on the users' home shard (one call): their lists and the lists of their friends
        held there (with `rows`, then the users' query vectors and feature rows). None when the shard does not
        answer."""
        users = np.asarray(users, np.int64)
        try:
            got = self._call(shard, "gather", users, rows)
        except ShardUnavailable:
            return None
        f_ptr, held, h_ptr = got[0], got[2], got[3]
        extra = sum(int(x.size) for x in got[5:])  # vectors and features: 4-byte words, counted as 8-byte halves
        self.stats.count(shard, users.size + held.size, int(f_ptr[-1] + h_ptr[-1]) + (extra + 1) // 2)
        return got

    def describe(self) -> dict:
        """What the shard servers serve besides lists (`ShardUsers.describe` of the first that answers; they
        come from one build)."""
        for s in range(self.plan.shards):
            try:
                return self._call(s, "describe")[0]
            except ShardUnavailable:
                continue
        raise ShardUnavailable(0, "no shard server answers")

    def search(self, queries: np.ndarray, k: int) -> list:
        """Every shard's k nearest users to each query (one parallel round): [(scores, labels) or None]."""
        return self.finish_search(self.start_search(queries, k))

    def start_search(self, queries: np.ndarray, k: int) -> tuple:
        """`search`'s round, sent; `finish_search` waits for it."""
        queries = np.ascontiguousarray(queries, np.float32)
        return self.start_many("search", [(s, (queries, int(k))) for s in range(self.plan.shards)])

    def finish_search(self, started: tuple) -> list:
        got = self.finish_many(started)
        queries = started[1][0][1][0]
        for s, reply in enumerate(got):
            if reply is not None:
                self.stats.count(s, 0, (queries.size + reply[0].size + 1) // 2 + reply[1].size)
        return got

    def fetch_rows(self, list_users: np.ndarray, feat_users: np.ndarray) -> tuple:
        """Lists of `list_users` and feature rows of `feat_users`, one parallel round (one call per home shard).
        A shard that does not answer leaves its users out. Returns ((users (r,), ptr (r + 1,), idx), (feature
        users (f,), rows (f, F) float32)), rows in any order."""
        list_users = np.unique(np.asarray(list_users, np.int64))
        feat_users = np.unique(np.asarray(feat_users, np.int64))
        lh, fh = self.plan.home[list_users], self.plan.home[feat_users]
        calls = [(int(t), (list_users[lh == t], feat_users[fh == t]))
                 for t in np.union1d(np.unique(lh), np.unique(fh)).tolist()]
        got = self.call_many("rows", calls)
        lists, feats = [], []
        for (s, args), reply in zip(calls, got, strict=True):
            if reply is None:
                continue
            lists.append((args[0], reply[0], reply[1]))
            feats.append((args[1], reply[2]))
            self.stats.count(s, args[0].size + args[1].size, int(reply[0][-1]) + (reply[2].size + 1) // 2)
        f_users = np.concatenate([f[0] for f in feats]) if feats else np.zeros(0, np.int64)
        f_rows = np.concatenate([f[1] for f in feats]) if feats else np.zeros((0, 0), np.float32)
        return concat_rows(lists), (f_users, f_rows)

    def lists_many(self, requests: list[tuple[int, np.ndarray]]) -> list:
        """One round of calls in parallel, one per (shard, users); None for a shard that did not answer."""
        calls = [(s, (np.asarray(users, np.int64),)) for s, users in requests]
        out = self.call_many("lists", calls)
        for (s, args), got in zip(calls, out, strict=True):
            if got is not None:
                self.stats.count(s, args[0].size, int(got[0][-1]))
        return out

    def call_many(self, method: str, calls: list[tuple[int, tuple]]) -> list:
        """One round of `method` calls in parallel, one per (shard, args): each reply without its boot id, or
        None for a shard that did not answer (flagged degraded)."""
        return self.finish_many(self.start_many(method, calls))

    def start_many(self, method: str, calls: list[tuple[int, tuple]]) -> tuple:
        """Sends a round of calls without waiting (on Ray they run while the caller does other work; in process
        each runs when it is waited for); `finish_many` waits for the replies."""
        return method, calls, [self._send(s, method, args) for s, args in calls]

    def finish_many(self, started: tuple) -> list:
        """The replies of a round `start_many` sent (`call_many`'s)."""
        method, calls, pending = started
        out = []
        for (s, args), p in zip(calls, pending, strict=True):
            try:
                out.append(self._wait(s, p, method, args))
            except ShardUnavailable:
                out.append(None)
        return out

    def fetch(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Lists of any users, one parallel round (one call per home shard). A shard that does not answer
        leaves its users out. Returns (users fetched (r,), ptr (r + 1,), idx (sum,) int64), rows in any order."""
        return self.fetch_rows(users, np.zeros(0, np.int64))[0]

    def popular(self, m: int) -> np.ndarray:
        """The m users with the most friends now (ties: lower index first), from every shard's own m."""
        got = [g for g in self.call_many("top_degree", [(s, (m,)) for s in range(self.plan.shards)]) if g is not None]
        if not got:
            return np.zeros(0, np.int64)
        users = np.concatenate([g[0] for g in got])
        deg = np.concatenate([g[1] for g in got])
        users, first = np.unique(users, return_index=True)  # a replicated user: every holder has its list
        deg = deg[first]
        return users[np.lexsort((users, -deg))][:m]

    def take_degraded(self) -> list[str]:
        """Shards that failed a call since the last take, as names for the request's `degraded` list."""
        with self._lock:
            out, self._degraded = sorted(self._degraded), set()
        return [f"shard {s}" for s in out]

    # ------------------------------------------------------------------------------ changes

    def home_of_new(self, user_ids) -> np.ndarray:
        """Home shard of users who joined after the build: a hash of their external id. Shape: (q,) int32."""
        return (stable_hash(np.asarray(user_ids, np.int64)) % np.uint64(self.plan.shards)).astype(np.int32)

    def add_users(self, dense: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
        """Extends the plan with new users (dense indices past it, in order); returns their home shards."""
        dense = np.asarray(dense, np.int64)
        if not dense.size:
            return np.zeros(0, np.int32)
        n = self.plan.home.size
        if dense[0] != n or not np.array_equal(dense, np.arange(n, n + dense.size)):
            raise ValueError(f"new users must extend the plan's {n} users in order, got {dense[:3].tolist()}...")
        home = self.home_of_new(user_ids)
        self.plan.home = np.concatenate([self.plan.home, home])  # replaced, never resized under a reader
        self._changed = np.concatenate([self._changed, np.ones(dense.size, bool)])
        return home

    def changed(self, users: np.ndarray) -> np.ndarray:
        """Whether each user's list changed since the build (or the user joined since). (q,) -> (q,) bool."""
        return self._changed[np.asarray(users, np.int64)]

    def holds(self, s: int, users: np.ndarray) -> np.ndarray:
        """Whether shard s holds each user's list (home or replica). Shapes: (q,) -> (q,) bool."""
        users = np.asarray(users, np.int64)
        rep = self.plan.replicas(s)
        held = self.plan.home[users] == s
        if rep.size:
            pos = np.minimum(np.searchsorted(rep, users), rep.size - 1)
            held |= rep[pos] == users
        return held

    def apply(self, kind, lo, hi, ts=None, new_users=None) -> np.ndarray:
        """Users who joined (dense indices already in the plan via `add_users`) and changes in order, each
        sent to the shards holding one of its ends. A shard that is down gets them on its restart (its
        history). Returns (e,) bool: whether change e changed the graph (a repeat or a removal of no
        friendship did not); a change no holder of either end answered for counts as changed (it is applied
        when they answer)."""
        lo = np.asarray(lo, np.int64).ravel()
        hi = np.asarray(hi, np.int64).ravel()
        kind = np.broadcast_to(np.asarray(kind, np.int8), lo.shape).copy()
        ts = np.broadcast_to(np.asarray(0 if ts is None else ts, np.float64), lo.shape).copy()
        new = np.zeros(0, np.int64) if new_users is None else np.asarray(new_users, np.int64)
        batches = {}
        for s in range(self.plan.shards):
            mine = self.holds(s, lo) | self.holds(s, hi)
            born = new[self.plan.home[new] == s] if new.size else new
            if mine.any() or born.size:
                batches[s] = (np.flatnonzero(mine), (kind[mine], lo[mine], hi[mine], ts[mine], born))
        self._changed[lo] = True  # before the servers change: a reader moves to them no later than they do
        self._changed[hi] = True
        for s, (_, batch) in batches.items():
            self.history[s].append(batch)
        pending = {s: self._send(s, "apply", b) for s, (_, b) in batches.items()}
        changed = np.zeros(lo.size, bool)
        answered = np.zeros(lo.size, bool)
        for s, (at, b) in batches.items():
            try:
                _, flags = self._wait(s, pending[s], "apply", b)
            except ShardUnavailable:
                continue  # still queued at a slow server; kept in its history for a restarted one
            changed[at] |= flags.any(axis=1)
            answered[at] = True
        return changed | ~answered

    def close(self) -> None:
        """Stops the shard servers when they are Ray actors this router's service started (a version swapped
        out, a service shut down); servers in process go with their objects."""
        if not self.remote:
            return
        import ray

        for handle in self.servers:
            try:
                ray.kill(handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone, or Ray shut down
                pass

    def server_stats(self) -> list[dict | None]:
        """Each shard server's `stats()` (None for one that did not answer)."""
        out = []
        for s in range(self.plan.shards):
            try:
                if self.remote:
                    import ray

                    out.append(ray.get(self.servers[s].stats.remote(), timeout=max(self.timeout_s, 10.0)))
                else:
                    out.append(self.servers[s].stats())
            except Exception:  # noqa: BLE001
                out.append(None)
        return out


def in_process_servers(model_dir, graph, plan: ShardPlan, *, users: bool = True) -> ShardRouter:
    """A router over one `ShardServer` per shard in this process: each opens its shard's files when the
    model has them (`pymk build --shards S`), else takes its lists from `graph`. `users`: each also holds its
    users' embeddings, ANN shard and features (what a ranking tier reads from them; a model that holds the
    whole graph reads its own)."""
    from pathlib import Path

    from pymk.graph.shard_graph import ShardGraph, has_shard_files
    from pymk.serving.shard_server import ShardServer

    files = model_dir is not None and has_shard_files(Path(model_dir) / "graph")
    servers = []
    for s in range(plan.shards):
        if files:
            servers.append(ShardServer(model_dir, s, plan_users=int(plan.home.size), users=users))
        else:
            servers.append(ShardServer(None, s, graph=ShardGraph.from_graph(graph, plan, s)))
    return ShardRouter(plan, servers)


def concat_rows(parts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pieces (users, ptr, idx) as one (users, ptr, idx), pieces in order."""
    if not parts:
        return np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64)
    users = np.concatenate([np.asarray(p[0], np.int64) for p in parts])
    lens = np.concatenate([np.diff(p[1]) for p in parts])
    ptr = np.zeros(users.size + 1, np.int64)
    np.cumsum(lens, out=ptr[1:])
    return users, ptr, np.concatenate([np.asarray(p[2], np.int64) for p in parts])


class DeltaOverlay:
    """A shard store (e.g. Redis with the build's lists) in front of the shard servers: the lists of users
    whose friendships changed since the build, and of users who joined since, come from the servers."""

    def __init__(self, base, servers: ShardRouter):
        self.base = base
        self.servers = servers
        self.plan = servers.plan
        self.stats = getattr(base, "stats", StoreStats())

    def lists(self, shard: int, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        users = np.asarray(users, np.int64)
        live = self.servers.changed(users)
        if not live.any():
            return self.base.lists(shard, users)
        if live.all():
            return self.servers.lists(shard, users)
        b_ptr, b_idx = self.base.lists(shard, users[~live])
        l_ptr, l_idx = self.servers.lists(shard, users[live])
        # both answers as one CSR (the build's rows, then the changed ones), then rows in the order asked
        ptr = np.concatenate([b_ptr, l_ptr[1:] + b_ptr[-1]])
        idx = np.concatenate([np.asarray(b_idx, np.int64), np.asarray(l_idx, np.int64)])
        pos = np.empty(users.size, np.int64)
        pos[~live] = np.arange(b_ptr.size - 1)
        pos[live] = np.arange(l_ptr.size - 1) + b_ptr.size - 1
        return gather_rows(ptr, idx, pos)

    def take_degraded(self):
        return self.base.take_degraded() if hasattr(self.base, "take_degraded") else False

    def __getattr__(self, attr):  # the base store's own (name, ...) for the service's fallbacks
        return getattr(self.base, attr)


def ray_servers(model_dir, plan: ShardPlan, *, address: str | None = None, timeout_s: float = 2.0,
                num_cpus: float = 0.25, users: bool = True) -> ShardRouter:
    """A router over one Ray actor per shard (`ShardServer`, restarted by Ray if its process dies), spread
    over the cluster's nodes, each reserving `num_cpus`. Joins the cluster at `address` (or starts a local one)
    unless Ray is already initialised. Every node must see `model_dir` (one machine, or shared storage). A
    cluster without the CPUs to place them (a swap holds two versions' servers) is refused at once, not waited on.
    `users`: each also holds its users' embeddings, ANN shard and features (what a ranking tier reads; a model
    that holds the whole graph reads its own, so its servers load only lists)."""
    from pathlib import Path

    import ray

    from pymk.graph.shard_graph import has_shard_files
    from pymk.serving.shard_server import ray_shard_server

    model_dir = str(Path(model_dir).resolve())
    if not has_shard_files(Path(model_dir) / "graph"):
        raise FileNotFoundError(f"{model_dir} has no per-shard files (graph/shards/): rebuild it with "
                                f"`pymk build --shards {plan.shards}`")
    if not ray.is_initialized():
        from pymk.pipeline.executor import connect_ray

        connect_ray(address)
    free = float(ray.available_resources().get("CPU", 0.0))
    if plan.shards * num_cpus > free + 1e-9:
        from pymk.pipeline.model import ModelError

        raise ModelError(f"the Ray cluster has {free:g} CPUs unreserved; {plan.shards} shard servers at {num_cpus:g} "
                         f"each need {plan.shards * num_cpus:g} (a swap holds two versions' servers at once): add "
                         f"nodes, or lower PYMK_SHARD_SERVER_CPUS")
    actor = ray_shard_server(num_cpus=num_cpus).options(scheduling_strategy="SPREAD")
    servers = [actor.remote(model_dir, s, plan_users=int(plan.home.size), users=users) for s in range(plan.shards)]
    router = ShardRouter(plan, servers, timeout_s=timeout_s)
    for s in range(plan.shards):  # wait until every shard has opened its files (first call compiles)
        router.boots[s] = router._get(s, servers[s].ping.remote(), "ping", (), 300.0)
    return router
