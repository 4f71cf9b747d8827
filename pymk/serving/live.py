"""The service's live state: friendships posted to `/v1/edges` refresh embeddings within seconds.

`POST /v1/edges` appends the friendship to the edge-event log (Redis Stream when the service has
Redis, else `DIR/stream/events.log`); every worker tails that log with a `StreamWorker`, which refreshes
the embeddings the edge changes (the two users and their friends, exactly), updates the worker's ANN
index and invalidates those users' cached recommendations. At start a worker replays the log, so its
state is the snapshot plus every friendship posted since, whichever worker took it.

Stage 1's friends-of-friends, the pair features, filters and explanations read a CSR: the worker
compacts the live graph into a new one and swaps it in (`Model.swap_graph`) at most every
`stream_graph_s` seconds, and at most 10% of its time (a 1M-user graph takes ~1 s to compact), then
invalidates the cached recommendations of the users within one hop of the new friendships. A sharded
model keeps its build's graph for Stage 1 (its shard stores hold the build's lists) until a rebuild.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("pymk.serving")


def stream_key(version: str) -> str:
    """The Redis Stream of a model's posted friendships (per model version, as its file log is per model
    directory: a rebuild from an edge list that includes them starts a new log)."""
    return f"pymk:stream:{version}:edges"


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


def event_log(settings, model_dir: Path, version: str):
    """The service's edge-event log: a Redis Stream with Redis, else a file in the model directory."""
    from pymk.stream.log import FileEventLog, RedisEventLog

    if settings.redis_url:
        import redis

        client = redis.Redis.from_url(settings.redis_url, socket_timeout=max(2.0, settings.stream_block_ms / 500),
                                      socket_connect_timeout=settings.redis_timeout_ms / 1000.0)
        return RedisEventLog(client, stream_key(version))
    return FileEventLog(Path(settings.stream_log) if settings.stream_log else model_dir / "stream" / "events.log")


def attach_stream(svc):
    """Starts the worker's `StreamWorker` (returns it), or None when it is off (`PYMK_STREAM=false`) or has
    nothing to update (a sharded model without embeddings). Without GNN embeddings only the graph follows."""
    from pymk.gnn.model import degree_stats
    from pymk.gnn.train import load_checkpoint
    from pymk.stream.adjacency import LiveAdjacency
    from pymk.stream.refresh import EmbeddingRefresher, GraphOnly
    from pymk.stream.worker import StreamStats, StreamWorker

    m = svc.model
    refresh = has_gnn(m)
    if svc.settings.stream is False or (not refresh and m.plan is not None):
        return None  # off, or nothing a sharded model without embeddings could update (its shards hold the graph)
    if not refresh and m.embeddings is not None:
        log.warning("%s: %d embeddings for %d users and no checkpoint to refresh them with: only the graph "
                    "follows posted friendships (rebuild)", m.path, m.embeddings.shape[0], m.graph.num_users)
    adj = LiveAdjacency(m.graph)
    worker = StreamWorker(svc.stream_log, GraphOnly(adj), m.graph.index_of, batch=100_000)
    try:  # replay what was posted since the snapshot: edges first, one inference after
        worker.drain()
    except Exception as exc:  # noqa: BLE001 - Redis down at start: serve, the worker catches up later
        log.warning("edge log unreadable at start (%s): the stream worker catches up when it answers", exc)
    caught_up = adj.added
    worker.stats = StreamStats()  # /healthz and the lag describe what arrives from now on
    lock = threading.RLock()
    ann = None
    if refresh:
        refresher = EmbeddingRefresher(load_checkpoint(m.path / "gnn", m.graph), adj,
                                       radius=svc.settings.stream_radius, stats=degree_stats(m.graph.degree))
        served = np.asarray(m.embeddings)
        ann = LockedAnn(m.ann, lock) if m.ann is not None else None
        if ann is not None:
            changed = np.flatnonzero(np.abs(refresher.emb - served).max(axis=1) > 1e-4)
            if changed.size:
                ann.replace(changed, refresher.emb[changed])
            m.stage1.ann = m._ann = ann
        m._emb = refresher.emb  # the live matrix is what Stage 1 reads from now on
        if svc.embeddings is not None:
            svc.embeddings.fallback = refresher.emb
            svc.embeddings.live = np.zeros(m.graph.num_users, bool)
        else:
            m.stage1.embeddings = refresher.emb
    else:
        refresher = GraphOnly(adj)

    def invalidate(users):
        try:
            svc.cache.invalidate(m.graph.ids[users].tolist())
        except Exception as exc:  # noqa: BLE001 - RedisDown: the cache replays its invalidations later
            log.warning("stream: cache invalidation deferred: %s", exc)

    # Stage 1 reads a CSR: compact the live graph into one now and then (see the module docstring)
    swap = {"at": 0.0, "added": 0, "every": svc.settings.stream_graph_s, "ends": []}

    def compact():
        if m.plan is not None or adj.added == swap["added"] or time.monotonic() - swap["at"] < swap["every"]:
            return
        t = time.perf_counter()
        added = adj.added
        m.swap_graph(adj.to_graph())
        took = time.perf_counter() - t
        swap.update(at=time.monotonic(), added=added, every=max(svc.settings.stream_graph_s, 10 * took))
        ends, swap["ends"] = swap["ends"], []
        if ends:  # friends-of-friends changed within one hop of the new friendships
            invalidate(adj.ball(np.concatenate(ends), 1))
        svc.metrics.stream_graph_swaps.inc()

    def on_refresh(out):
        if svc.embeddings is not None and out.users.size:
            svc.embeddings.live[out.users] = True  # newer than the hot / cold tiers
        svc.metrics.stream_refreshed.inc(int(out.users.size))
        swap["ends"].append(out.ends)
        invalidate(out.users)

    def on_batch(events, lag):
        svc.metrics.stream_events.inc(events)
        svc.metrics.stream_lag.observe(max(lag, 0.0))

    worker.refresher, worker.ann, worker.lock, worker.batch = refresher, ann, lock, 1000
    worker.on_refresh, worker.on_batch, worker.tick = on_refresh, on_batch, compact
    log.info("stream: replayed %d friendships posted since the snapshot; tailing %s", caught_up,
             getattr(svc.stream_log, "path", None) or getattr(svc.stream_log, "key", ""))
    compact()  # the replayed friendships, before the first request
    worker.start(svc.settings.stream_block_ms)
    return worker
