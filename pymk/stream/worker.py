"""The stream worker: tails the edge-event log and keeps a model's live state current.

For each micro-batch of events: map ids, add the friendships to the live graph, refresh the embeddings
they change (`EmbeddingRefresher`), put the new vectors in the ANN index, count staleness, and tell the
caller which users changed (the service invalidates their cached recommendations).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from pymk.stream.log import position_key
from pymk.stream.refresh import EmbeddingRefresher, GraphOnly
from pymk.stream.staleness import StalenessTracker

log = logging.getLogger("pymk.stream")


@dataclass
class StreamStats:
    events: int = 0
    new_edges: int = 0
    new_users: int = 0  # users created by an event naming an id the model did not have
    removed_edges: int = 0  # friendships removed (unfriending, erasure)
    erased: int = 0  # accounts erased
    ignored: int = 0  # events naming an erased user (never resurrected) or removing for an unknown one
    refreshed: int = 0  # embeddings recomputed, summed over batches
    batches: int = 0
    last_lag_s: float = 0.0  # event time -> its embeddings published, for the newest event applied
    lags_s: list = field(default_factory=list)  # the last 1,000 batches' lags


class StreamWorker:
    """Args:
        log: a `FileEventLog` or `RedisEventLog`.
        refresher: an `EmbeddingRefresher` (the live graph and embeddings) or a `GraphOnly` (the graph).
        index_of: external ids -> dense indices (-1 unknown), e.g. `graph.index_of`.
        ann: an ANN index with `replace(users, vectors)` (or None); updated under `lock`.
        lock: held while the ANN changes (searches take it too); default a fresh one.
        on_refresh: called with each batch's `Refresh` (users whose embedding changed, new edges' endpoints).
        tick: called after every poll, events or not (the service's graph compaction).
        on_batch: called with (events read, lag in seconds of the newest) after each micro-batch.
        staleness: a `StalenessTracker` fed with the events' friendships (refreshed users are marked), for a
            worker that refreshes less than it reads (the service refreshes every endpoint at once, so it
            keeps none).
        batch: events per micro-batch.
        apply: events -> `Change`, the model's one change path (`Model.apply`); default: friendships
            added to the refresher's graph (ids through `index_of`, unknown ones counted as ignored).
    """

    def __init__(self, log, refresher: EmbeddingRefresher | GraphOnly, index_of, *, ann=None, lock=None,
                 on_refresh=None, staleness: StalenessTracker | None = None, batch: int = 1000, on_batch=None,
                 tick=None, apply=None, gap_check_s: float = 30.0):
        self.log = log
        self.refresher = refresher
        self.index_of = index_of
        self.ann = ann
        self.lock = lock or threading.RLock()
        self.on_refresh = on_refresh
        self.staleness = staleness
        self.on_batch = on_batch
        self.tick = tick
        self.batch = batch
        self.position: str | None = None
        self.stats = StreamStats()
        self.gap_check_s = gap_check_s
        self.gap: str | None = None  # set once the log dropped events this worker had not read (`check_gap`)
        self._stop = threading.Event()
        self._applied = threading.Condition()
        self.apply = apply or _adds_only(index_of, refresher)
        self._thread: threading.Thread | None = None

    def poll(self, block_ms: int = 0) -> int:
        """Applies the next micro-batch of events; returns how many events it read."""
        events, position = self.log.read(self.position, self.batch, block_ms)
        if not events:
            self._advance(position)  # past unreadable entries, if any
            return 0
        change = self.apply(events)
        if change.ignored:
            self.stats.ignored += change.ignored
        out = self.refresher.refresh(change.ends, change.added)
        users = out.users
        erased = getattr(self.refresher.adj, "erased", None)
        if users.size and erased is not None:
            keep = ~erased[users]  # an erased account is never put back in the index
            users, vectors = users[keep], out.vectors[keep]
        else:
            vectors = out.vectors
        if users.size and self.ann is not None:
            with self.lock:
                self.ann.replace(users, vectors)
        lo, hi, ts_new = change.added_pairs
        if self.staleness is not None and lo.size:
            self.staleness.record(lo, hi, ts_new)
            self.staleness.mark_refreshed(out.users)
        if self.on_refresh is not None and (change.ends.size or change.actions or change.new_users):
            self.on_refresh(out, change)
        self._advance(position)  # only once applied: a failed batch is read again
        ts = np.array([e.ts for e in events])
        lag = time.time() - float(ts.max())
        s = self.stats
        s.events += len(events)
        s.new_edges += change.added
        s.removed_edges += change.removed
        s.new_users += len(change.new_users)
        s.erased += len(change.erased)
        s.refreshed += int(out.users.size)
        s.batches += 1
        s.last_lag_s = lag
        s.lags_s = (s.lags_s + [lag])[-1000:]
        if self.on_batch is not None:
            self.on_batch(len(events), lag)
        return len(events)

    def _advance(self, position) -> None:
        with self._applied:
            self.position = position
            self._applied.notify_all()

    def wait_applied(self, position: str, timeout: float = 2.0) -> bool:
        """Blocks until this worker has applied the log up to `position` (what an append returned): a
        change made through this worker is visible to its next request. False on timeout."""
        want = position_key(position)
        deadline = time.monotonic() + timeout
        with self._applied:
            while self.position is None or position_key(self.position) < want:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._applied.wait(left)
        return True

    def check_gap(self) -> str | None:
        """Whether the log dropped events after this worker's position (a Redis stream trimmed by MAXLEN while
        the worker was behind): they will never be applied here, so from then on `gap` says why (the service
        flags every answer degraded). Redis down: not checked this time."""
        if self.gap is None:
            try:
                gap = self.log.missing_after(self.position)
            except Exception as exc:  # noqa: BLE001 - Redis down: the next check
                log.debug("stream worker: trim check skipped: %s", exc)
                return None
            if gap:
                self.gap = gap
                log.error("stream worker: %s; this worker misses those changes until a newer version is "
                          "published", gap)
        return self.gap

    def drain(self) -> int:
        """Applies every event in the log now; returns how many."""
        total = 0
        while n := self.poll():
            total += n
        return total

    def start(self, block_ms: int = 200) -> None:
        """Tails the log in a daemon thread until `stop()`; an error in a batch is logged, not fatal."""
        def loop():
            failing = False
            next_check = time.monotonic() + self.gap_check_s
            while not self._stop.is_set():
                try:
                    self.poll(block_ms)
                    if self.tick is not None:
                        self.tick()
                    if time.monotonic() >= next_check:
                        next_check = time.monotonic() + self.gap_check_s
                        self.check_gap()
                    if failing:
                        log.warning("stream worker: reading and applying again")
                    failing = False
                except Exception:  # noqa: BLE001 - the service keeps serving; the next poll retries
                    if not failing:  # once per outage, not once a second
                        log.exception("stream worker: batch failed; retrying every second")
                    failing = True
                    self._stop.wait(1.0)

        self._thread = threading.Thread(target=loop, name="pymk-stream", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _adds_only(index_of, refresher):
    """The change path of a worker without a model: 'add' events into the refresher's live graph."""
    from pymk.pipeline.changes import Change

    def apply(events) -> Change:
        adds = [e for e in events if e.op == "add"]
        src = index_of(np.array([e.src for e in adds], np.int64))
        dst = index_of(np.array([e.dst for e in adds], np.int64))
        ts = np.array([e.ts for e in adds], np.float64)
        ok = (src >= 0) & (dst >= 0)
        ch = refresher.adj.apply(1, src[ok], dst[ok], ts[ok])
        lo, hi, t = src[ok][ch], dst[ok][ch], ts[ok][ch]
        return Change(ends=np.unique(np.concatenate([lo, hi])), added=int(lo.size), added_pairs=(lo, hi, t),
                      ignored=int((~ok).sum()) + len(events) - len(adds))

    return apply
