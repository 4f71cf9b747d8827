"""Publishing a new model version into a running service: each worker swaps on its own, losing nothing.

`pymk publish --model N+1` names N+1 in its lineage's pointer (`pymk.pipeline.lineage.Pointer`: a file beside
the lineage's event log, or a Redis key). Every worker runs a `Swapper`, which reads the pointer every
`publish_poll_s`; when it names a version other than the one served, the worker
    1. loads N+1 beside the running version (requests keep being answered by N),
    2. replays the shared event log from N+1's `events.through` (what N+1's snapshot holds) to its end:
       every change posted to N while N+1 was built is applied to N+1,
    3. takes over N's events the log could not take yet (Redis down: `Service._unlogged`) and its metrics,
    4. makes N+1 the app's service in one assignment, then stops N's stream worker.
Changes posted in the moment between 2 and 4 are in the log and reach N+1 within one poll of the log.
A version that cannot be served (missing, another format, another event log, a failed load) is logged and
counted (`pymk_model_swaps_total{result="failed"}`); N keeps serving and the pointer is not tried again
until it changes. Swapping back to an older version (a rollback) is the same path.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("pymk.serving")


class SwapRefused(Exception):
    """A published version this service cannot swap to (the reason is the message)."""


class Swapper:
    """Args: app: the FastAPI app whose `state.service` is swapped; poll_s: how often the pointer is read."""

    def __init__(self, app, poll_s: float = 1.0):
        from pymk.pipeline.lineage import Pointer

        self.app = app
        self.poll_s = poll_s
        svc = app.state.service
        client = svc.link.client if svc.link is not None else None
        self.pointer = Pointer.of_model(svc.model.path, svc.model.meta, client=client,
                                        stream_log=svc.settings.stream_log)
        self._tried: str | None = None  # the pointer record last tried and refused (not retried until it changes)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """Reads the pointer once and swaps if it names another version; True when it swapped."""
        try:
            rec = self.pointer.read()
        except Exception as exc:  # noqa: BLE001 - Redis down, a half-written file: read again next poll
            log.debug("publish pointer %s unreadable: %s", self.pointer.where, exc)
            return False
        current = self.app.state.service.model.version  # no reference to the service: the swap frees it
        if rec is None or rec["version"] == current:
            return False
        key = f"{rec['version']}@{rec['at']}"
        if key == self._tried:
            return False
        self._tried = key
        t0 = time.perf_counter()
        try:
            self.swap(rec)
        except Exception as exc:  # noqa: BLE001 - the running version keeps serving
            self.app.state.service.metrics.model_swaps.labels("failed").inc()
            log.error("published version %s (%s) not swapped in, %s keeps serving: %s", rec["version"],
                      rec["model"], current, exc)
            return False
        log.warning("swapped to published version %s (%s) from %s in %.1f s", rec["version"], rec["model"],
                    current, time.perf_counter() - t0)
        return True

    def swap(self, rec: dict) -> None:
        from pymk.pipeline.lineage import log_name
        from pymk.serving.service import Service

        old = self.app.state.service
        settings = old.settings.model_copy(update={"model": rec["model"]})
        new = Service.from_settings(settings, metrics=old.metrics)
        try:
            if new.model.version != rec["version"]:
                raise SwapRefused(f"{rec['model']} holds version {new.model.version}, the pointer names "
                                  f"{rec['version']}")
            follows = [None if s.stream_log is None else log_name(s.stream_log) for s in (new, old)]
            if follows[0] != follows[1]:
                raise SwapRefused(f"{rec['model']} follows event log {follows[0]}, this service writes {follows[1]}: "
                                  f"the changes posted here since would be lost; update from this service's log")
            new.warm()
            end = new.stream_log.end() if new.stream is not None else None
            if end is not None:
                if not new.stream.wait_applied(end, timeout=max(30.0, old.settings.apply_wait_s)):
                    raise SwapRefused(f"the new version did not catch up with the event log (at {end}) in time")
        except BaseException:
            new.close()
            raise
        with old._log_lock:  # one list of not-yet-logged changes for both, under one lock, from now on
            new._unlogged = old._unlogged
            new._log_lock = old._log_lock
        new.metrics.model_swaps.labels("ok").inc()  # counted before it answers: a reader of both sees them agree
        self.app.state.service = new
        from pymk.serving.auth import KeyStore, keys_path

        if keys_path(rec["model"]).exists():  # a version without keys of its own keeps serving the ones in force
            self.app.state.keys = KeyStore.of_model(rec["model"])
        old.close()
        del old
        # N sits in reference cycles (its stream worker's callbacks name it), frozen since start-up: give its
        # memory back now, not at the interpreter's next full collection, and freeze N+1's
        from pymk.pipeline.memory import refreeze_heap

        if settings.gc_freeze:
            refreeze_heap()
        else:
            import gc

            gc.collect()

    def start(self) -> None:
        def loop():
            while not self._stop.wait(self.poll_s):
                self.check()

        self._thread = threading.Thread(target=loop, name="pymk-swap", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
