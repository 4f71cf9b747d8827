"""Everything a request needs, assembled once per worker: the model, its stores (Redis-backed ones with
their embedded twins behind them), the cache, the user actions, the metrics and the settings."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from pymk.pipeline.model import Model, has_feature_table, has_shard_plan
from pymk.serving.actions import UserActions
from pymk.serving.cache import make_cache
from pymk.serving.fallback import FallbackStore
from pymk.serving.flow import run_flow
from pymk.serving.metrics import Metrics
from pymk.serving.redis_link import RedisLink
from pymk.serving.request import Request
from pymk.serving.settings import ServeSettings

log = logging.getLogger("pymk.serving")


class Service:
    """Args: model: a loaded `Model`; settings; link: the service's `RedisLink` (None: embedded only);
    metrics: the worker's `Metrics` (a swapped-in version keeps counting in its predecessor's)."""

    def __init__(self, model: Model, settings: ServeSettings, link: RedisLink | None = None,
                 metrics: Metrics | None = None):
        self.model = model
        self.settings = settings
        self.link = link
        self.owned_servers = None  # Ray shard servers `from_settings` started for this version: stopped by close
        self.metrics = metrics or Metrics()
        self.cache = make_cache(model.version, settings, link)
        self.actions = UserActions(link)
        for kind, a, b in model.standing.actions():  # blocks and dismissals folded into this version
            self.actions.add_local(kind, a, b)
        self.fallbacks: list[FallbackStore] = []
        if link is not None:
            self._wrap_redis_stores()
        from pymk.serving.embeddings import attach_tiered_embeddings

        self.embeddings = attach_tiered_embeddings(self)  # None unless the model has embeddings and tiers
        from pymk.serving.live import attach_stream, event_log

        self._unlogged: list[tuple[int, int, float]] = []  # edges posted while the log (Redis) was down
        self._log_lock = threading.Lock()
        self.stream_log = event_log(settings, model.path, model.meta) if model.path is not None else None
        self.stream = attach_stream(self) if self.stream_log is not None else None

    @classmethod
    def from_settings(cls, settings: ServeSettings, *, shards: int | None = None,
                      metrics: Metrics | None = None) -> Service:
        """Loads the model of `settings.model`; with `settings.redis_url`, reads what `pymk publish` put
        there, unless Redis is unreachable at start (then embedded stores, cache and actions recover later)."""
        path = Path(settings.model)
        link = None
        client = None
        if settings.redis_url:
            link = RedisLink.from_url(settings.redis_url, timeout_ms=settings.redis_timeout_ms,
                                      retry_s=settings.redis_retry_s)
            if has_shard_plan(path) or has_feature_table(path):  # what `pymk publish` puts in Redis
                if link.ping():
                    client = link.client
                else:
                    log.warning("redis at %s unreachable at start: the model's stores are served from %s",
                                settings.redis_url, path)
        servers = None
        tier = (settings.executor == "ray" if settings.tier is None else settings.tier) and has_shard_plan(path)
        if settings.executor == "ray":
            from pymk.graph.sharded import load_plan
            from pymk.pipeline.model import ModelError
            from pymk.serving.shard_router import ray_servers

            plan = load_plan(path / "graph", expect_shards=shards)
            if plan is None:
                raise ModelError(f"{path} was built unsharded: `--executor ray` runs one shard server per graph "
                                 f"shard; build with `pymk build --shards S`")
            servers = ray_servers(path, plan, address=settings.ray_address,
                                  timeout_s=settings.shard_timeout_ms / 1000.0, num_cpus=settings.shard_server_cpus,
                                  users=tier)
        try:
            model = Model.load(path, shards=shards, redis_client=client, servers=servers,
                               tier=tier)
            if settings.ppr_rounds is not None:  # the operator's latency / fidelity trade, without a rebuild
                model.config.candidates.ppr.rounds = settings.ppr_rounds
            svc = cls(model, settings, link, metrics)
        except BaseException:
            if servers is not None:  # a version that cannot be served leaves no shard servers behind
                servers.close()
            raise
        svc.owned_servers = servers
        return svc

    def _wrap_redis_stores(self) -> None:
        from pymk.features.store import InProcessFeatureStore, RedisFeatureStore
        from pymk.graph.shard_store import RedisShardStore

        m = self.model
        if isinstance(m.feature_store, RedisFeatureStore):
            local = InProcessFeatureStore.load(m.path / "features", m.graph.num_users)
            fs = FallbackStore(m.feature_store, local, self.link, "features")
            m.use_feature_store(fs)
            self.fallbacks.append(fs)
        redis_store = getattr(m.store, "base", m.store)
        if isinstance(redis_store, RedisShardStore):  # Redis down: the shard servers answer
            ss = FallbackStore(redis_store, m.servers, self.link, "graph")
            m.use_shard_store(ss)
            self.fallbacks.append(ss)

    def log_event(self, op: str, src: int, dst: int) -> str | None:
        """Appends a change to the event log; returns its position, or None when the log cannot be written
        now: the change is kept and logged, in order, by the next post or the stream worker's next poll
        (`flush_unlogged`)."""
        if self.stream_log is None:
            return None
        with self._log_lock:
            self._unlogged.append((src, dst, time.time(), op))
            return self._write_unlogged()

    def flush_unlogged(self) -> None:
        """Logs the changes the log could not take when they were posted (Redis down): called by the stream
        worker after every poll, so they reach every worker once Redis is back even if nothing else is posted."""
        if self._unlogged and self._log_lock.acquire(blocking=False):
            try:
                if self._write_unlogged() is not None:
                    log.warning("event log writable again: the changes posted meanwhile are logged")
            finally:
                self._log_lock.release()

    def _write_unlogged(self) -> str | None:
        pos = None
        try:
            while self._unlogged:
                pos = self.stream_log.append(*self._unlogged[0])
                self._unlogged.pop(0)
        except Exception as exc:  # noqa: BLE001 - Redis down or slow: answer degraded, keep the event
            log.warning("event log unavailable, %d events waiting: %s", len(self._unlogged), exc)
            return None
        return pos

    def log_end_and_cache(self, user: int) -> tuple[str | None, tuple | None]:
        """The event log's end and, with Redis (a Redis Stream log and, by `make_cache`, the Redis cache), the
        user's cached list and token read in the same round trip through the service's link (its short timeout
        and breaker, not the log's blocking client); a file log's end is read locally, with no list (None).
        Redis unreachable: (None, None)."""
        from pymk.serving.redis_link import RedisDown
        from pymk.stream.log import last_id

        log_ = self.stream_log
        if self.link is None or not hasattr(log_, "key"):
            return log_.end(), None
        try:
            (last,), cached = self.cache.get_after(user, lambda p: p.xrevrange(log_.key, count=1))
        except RedisDown:
            return None, None
        return last_id(last), cached

    def log_edge(self, src: int, dst: int) -> bool:
        return self.log_event("add", src, dst) is not None or self.stream_log is None

    def apply_now(self, op: str, src: int, dst: int) -> bool:
        """Logs a change and waits until this worker applied it (its next request sees it). False when the
        log could not take it or the worker did not catch up in time (it will: the event is logged)."""
        pos = self.log_event(op, src, dst)
        if pos is None:
            return False
        if self.stream is None:
            return True
        return self.stream.wait_applied(pos, timeout=self.settings.apply_wait_s)

    def erase_stored(self, user_id: int, idx: int) -> bool:
        """Erases what Redis holds of an erased user: its cached list and invalidation token, its action
        sets, its feature row and its hot-tier embedding. False if Redis could not be reached (retry)."""
        from pymk.serving.redis_link import RedisDown

        ok = True
        try:
            self.cache.invalidate([user_id])
        except RedisDown:
            ok = False
        try:
            self.actions.forget(user_id)
        except RedisDown:
            ok = False
        if self.link is not None:
            from pymk.pipeline.model import feature_prefix
            from pymk.serving.embeddings import hot_prefix

            keys = [f"{feature_prefix(self.model.meta)}:u:{idx}", f"{hot_prefix(self.model.version)}:{idx}",
                    f"pymk:recver:{user_id}"]
            try:
                self.link.call(lambda c: c.delete(*keys))
            except RedisDown:
                ok = False
        return ok

    def close(self) -> None:
        if self.stream is not None:
            self.stream.stop()
        if self.owned_servers is not None:
            self.owned_servers.close()
            self.owned_servers = None

    def take_store_degradation(self, req: Request) -> None:
        for fb in self.fallbacks:
            if fb.take_degraded():
                req.degrade(fb.name)
        if self.model.servers is not None:  # shard servers that did not answer in time ("shard 2")
            for name in self.model.servers.take_degraded():
                req.degrade(name)

    def recommend(self, user_id: int, k: int) -> Request:
        """Runs the request flow for one user (raises `NotEligible` for a user not in the model)."""
        req = Request(user_id=user_id, k=k, depth=max(k, self.settings.cache_depth))
        return run_flow(req, self)

    def warm(self) -> None:
        """Compiles the kernels on the first user so the first request is not slow."""
        if self.model.graph.num_users:
            from pymk.serving import batch

            batch.recommend(self.model, np.zeros(1, np.int64), 1)  # the whole path, as requests run it

    def redis_state(self) -> str:
        if self.link is None:
            return "none"
        up = self.link.ping()
        self.metrics.redis_up.set(1 if up else 0)
        return "up" if up else "down"

