"""The service's live state: every change posted to the API reaches every worker through the event log.

`POST /v1/edges`, `DELETE /v1/users/{a}/friends/{b}`, `DELETE /v1/users/{id}`, blocks and dismissals
append an event to the log (Redis Stream when the service has Redis, else `DIR/stream/events.log`, shared
by the workers of one machine). Every worker tails it with a `StreamWorker`, which applies each batch
through the model's one change path (`Model.apply`: the living graph's delta, new users, erasures, the ANN
index), refreshes the embeddings the change touches, and drops the cached recommendations it makes stale
(the users within one hop of a changed friendship). The worker that took a request waits until its own
stream worker has applied the event, so the change is visible to its next request; the others apply it
within their poll interval, and a request reaching one of them first waits until it has (`steps/sync.py`).
At start a worker replays the log from what its snapshot holds (the start, or an updated version's
`events.through`), so its state is the snapshot plus every change posted since, whichever worker took it.
The delta is folded into a new snapshot generation in a background thread when it grows past a quarter of
the snapshot (`LiveGraph.compact`).

A sharded model's Stage 1 reads its shard stores (the build's lists): its workers refresh embeddings
from posted friendships only, until a rebuild.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("pymk.serving")


class LockedAnn:
    """An ANN index whose searches and updates take one lock (FAISS indexes are not safe to change while
    another thread searches them)."""

    def __init__(self, ann, lock):
        self._ann = ann
        self._lock = lock

    def search(self, queries, k):
        with self._lock:
            return self._ann.search(queries, k)

    def replace(self, users, vectors):
        with self._lock:
            self._ann.replace(users, vectors)

    def contains(self, users):
        with self._lock:
            return self._ann.contains(users)

    def __getattr__(self, name):
        return getattr(self._ann, name)


def has_gnn(model) -> bool:
    return model.path is not None and (model.path / "gnn" / "checkpoint.json").exists() and \
        model.embeddings is not None and model.embeddings.shape[0] == model.graph.num_users


def event_log(settings, model_dir: Path, meta: dict):
    """The service's edge-event log, one for every version of the model's lineage
    (`pymk.pipeline.lineage`): a Redis Stream with Redis, else a file shared by the workers of the machine."""
    from pymk.pipeline.lineage import file_log_path, lineage, stream_key
    from pymk.stream.log import FileEventLog, RedisEventLog

    if settings.redis_url:
        import redis

        client = redis.Redis.from_url(settings.redis_url, socket_timeout=max(2.0, settings.stream_block_ms / 500),
                                      socket_connect_timeout=settings.redis_timeout_ms / 1000.0)
        return RedisEventLog(client, stream_key(lineage(meta)))
    return FileEventLog(file_log_path(model_dir, meta, settings.stream_log), lineage=lineage(meta))


def refuse_log_gap(stream_log, position: str | None, what: str) -> None:
    """Raises `ModelError` when the log can no longer give every event after `position` (a Redis stream trimmed
    past it): a version started there would silently miss changes that were acknowledged. Redis down: checked
    by no one here (the worker catches up later)."""
    from pymk.pipeline.model import ModelError

    try:
        gap = stream_log.missing_after(position)
    except Exception as exc:  # noqa: BLE001 - Redis down at start
        log.warning("event log unreadable at start (%s): not checked for trimmed events", exc)
        return
    if gap:
        raise ModelError(f"{what} cannot follow its event log: {gap}. Those events are in neither this version's "
                         f"snapshot nor the log: serve a version updated from the log more recently, or rebuild "
                         f"from the source of truth (`pymk build`); keep the stream longer than a version's "
                         f"life (MAXLEN)")


def attach_stream(svc):
    """Starts the worker's `StreamWorker` (returns it), or None when it is off (`PYMK_STREAM=false`) or has
    nothing to update (a sharded model without embeddings). Without GNN embeddings only the graph follows."""
    from pymk.gnn.model import degree_stats
    from pymk.gnn.train import load_checkpoint
    from pymk.graph.live import LiveGraph
    from pymk.stream.inductive import GrowingEmbeddings, neighbour_centroids
    from pymk.stream.refresh import EmbeddingRefresher, GraphOnly
    from pymk.stream.worker import StreamStats, StreamWorker

    m = svc.model
    tier = getattr(m.graph, "tier", False)  # a ranking tier: changes go to the shard servers
    refresh = has_gnn(m) and not tier
    if tier and has_gnn(m):
        log.warning("%s: served as a ranking tier: its embeddings stay as built (a refresh reads a whole "
                    "neighbourhood; users who join are served from the other sources)", m.path)
    live = isinstance(m.graph, LiveGraph) or tier
    if svc.settings.stream is False or (not refresh and not live):
        return None  # off, or nothing a sharded model without embeddings could update (its shards hold the graph)
    if not refresh and m.embeddings is not None:
        log.warning("%s: %d embeddings for %d users and no checkpoint to refresh them with: only the graph "
                    "follows posted changes (rebuild)", m.path, m.embeddings.shape[0], m.graph.num_users)
    adj = m.graph if live else LiveGraph(m.graph)  # sharded: a private graph for the embedding refresh only
    adj.warm()  # the first posted change must not wait for numba to compile the writer
    worker = StreamWorker(svc.stream_log, GraphOnly(adj), adj.index_of, batch=100_000,
                          apply=m.apply if live else None)
    worker.on_refresh = lambda out, change: _apply_actions(svc, change)
    from pymk.pipeline.lineage import log_name, start_position

    worker.position = start_position(m.meta, log_name(svc.stream_log))  # an updated version's snapshot holds the rest
    refuse_log_gap(svc.stream_log, worker.position, f"{m.path} (version {m.version})")
    try:  # replay what was posted since the snapshot: changes first, one inference after
        worker.drain()
    except Exception as exc:  # noqa: BLE001 - Redis down at start: serve, the worker catches up later
        log.warning("event log unreadable at start (%s): the stream worker catches up when it answers", exc)
    replayed = worker.stats.events
    worker.stats = StreamStats()  # /healthz and the lag describe what arrives from now on
    lock = threading.RLock()
    ann = None
    if refresh:
        refresher = EmbeddingRefresher(load_checkpoint(m.path / "gnn", m.graph.graph if live else m.graph), adj,
                                       radius=svc.settings.stream_radius, stats=degree_stats(adj.graph.degree))
        served = np.asarray(m.embeddings)
        ann = LockedAnn(m.ann, lock) if m.ann is not None else None
        if ann is not None:
            changed = np.flatnonzero(np.abs(refresher.emb - served[:refresher.limit]).max(axis=1) > 1e-4)
            changed = changed[~adj.erased[changed]]
            if changed.size:
                ann.replace(changed, refresher.emb[changed])
            m.use_ann(ann)
        gone = np.flatnonzero(adj.erased[:refresher.limit])
        refresher.emb[gone] = 0.0  # erased accounts keep no embedding
        if svc.embeddings is not None:
            svc.embeddings.fallback = refresher.emb
            svc.embeddings.live = np.zeros(refresher.limit, bool)
            svc.embeddings.live[gone] = True  # never read from the tiers again
        # users who joined since the build: an inductive embedding from their friends (`pymk.stream.inductive`)
        grown = GrowingEmbeddings(svc.embeddings if svc.embeddings is not None else refresher.emb)
        m.use_embeddings(grown, live=refresher.emb)  # the live matrix is what Stage 1 reads from now on
    else:
        refresher = GraphOnly(adj)
        grown = None

    def estimate_new(users):
        """Inductive vectors for the new users among `users` (and into the ANN index)."""
        if grown is None:
            return
        users = np.asarray(users, np.int64)
        users = users[(users >= refresher.limit) & (users < adj.num_users)]
        gone = users[adj.erased[users]]
        if gone.size:
            grown.drop(gone)
        users = users[~adj.erased[users]]
        if not users.size:
            return
        got, vectors = neighbour_centroids(adj, refresher.emb, users, refresher.limit)
        grown.set(got, vectors)
        if ann is not None and got.size:
            ann.replace(got, vectors)

    if live:
        estimate_new(np.arange(adj.num_users))  # those the replay created

    def invalidate(users):
        users = np.asarray(users, np.int64)
        users = users[users < adj.num_users]
        users = users[~adj.erased[users]]  # an erased user's entries went with its erasure (no key recreated)
        try:
            svc.cache.invalidate(adj.ids[users].tolist())
        except Exception as exc:  # noqa: BLE001 - RedisDown: the cache replays its invalidations later
            log.warning("stream: cache invalidation deferred: %s", exc)

    compacting = threading.Lock()

    def compact_in_background():
        if not live or not adj.needs_compaction() or not compacting.acquire(blocking=False):
            return

        def run():
            try:
                t = time.perf_counter()
                adj.compact()
                svc.metrics.stream_graph_swaps.inc()
                log.info("stream: delta folded into snapshot generation %d in %.2f s", adj.generation,
                         time.perf_counter() - t)
            except Exception:  # noqa: BLE001 - the delta keeps serving; the next tick tries again
                log.exception("stream: compaction failed")
            finally:
                compacting.release()

        threading.Thread(target=run, name="pymk-compact", daemon=True).start()

    def on_refresh(out, change):
        if svc.embeddings is not None and out.users.size:
            live_mask = svc.embeddings.live
            live_mask[out.users[out.users < live_mask.size]] = True  # newer than the hot / cold tiers
        if refresh and change.erased:
            gone = np.array([u for u in change.erased if u < refresher.limit], np.int64)
            refresher.emb[gone] = 0.0
            if svc.embeddings is not None:
                svc.embeddings.live[gone] = True
        svc.metrics.stream_refreshed.inc(int(out.users.size))
        if grown is not None and change.ends.size:  # new users whose friends changed, or who did
            near = adj.ball(change.ends, 1) if change.ends.size < 10_000 else change.ends
            estimate_new(near)
        _apply_actions(svc, change)
        if change.ends.size:  # friends-of-friends changed within one hop of the changed friendships
            invalidate(adj.ball(change.ends, 1) if change.ends.size < 10_000 else change.ends)
        if out.users.size:
            invalidate(out.users)
        compact_in_background()

    def on_batch(events, lag):
        svc.metrics.stream_events.inc(events)
        svc.metrics.stream_lag.observe(max(lag, 0.0))

    worker.refresher, worker.ann, worker.lock, worker.batch = refresher, ann, lock, 1000
    worker.on_refresh, worker.on_batch = on_refresh, on_batch
    worker.tick = svc.flush_unlogged  # changes posted while the log was down reach it once it answers
    log.info("stream: replayed %d events posted since the snapshot; tailing %s", replayed,
             getattr(svc.stream_log, "path", None) or getattr(svc.stream_log, "key", ""))
    compact_in_background()
    worker.start(svc.settings.stream_block_ms)
    return worker


def _apply_actions(svc, change) -> None:
    """Blocks and dismissals from the log into this worker's action store; erased users forgotten."""
    for op, src, dst in change.actions:
        svc.actions.add_local("blocked" if op == "block" else "dismissed", src, dst)
        svc.cache.invalidate_local([src] if op == "dismiss" else [src, dst])
    for u in change.erased:
        uid = int(svc.model.graph.ids[u])
        svc.actions.forget_local(uid)
        svc.cache.invalidate_local([uid])
