"""Step 0, sync: the worker has applied every change any worker acknowledged before this request.

A change posted to one worker is logged, then acknowledged once that worker applied it; the others apply it
when they next read the log. Without this step a request reaching another worker in that window could still
see a blocked pair, a hidden or erased user, or a stale cached list. Here the request reads the log's end
(one Redis round trip, or a read of the file log's last bytes) and waits until this worker's stream worker
has applied the log that far: every acknowledged change is visible to every later request, whichever worker
answers it. Past `read_fence_s` it answers with what it has, flagged degraded ("stream").

With the Redis cache the log's end and the user's cached list are read in one round trip (MULTI/EXEC); the list
is used when this worker had applied the log up to that end before the read (its invalidations were done),
else `cache_read` reads it again after the wait."""

from __future__ import annotations

from pymk.serving.request import Request
from pymk.stream.log import position_key


def run(req: Request, svc) -> None:
    if svc.stream is not None and svc.stream.gap is not None:  # the log dropped changes this worker never read
        req.degrade("stream")
    if svc.stream is None or svc.settings.read_fence_s <= 0:
        return
    applied = svc.stream.position  # before the read: what this worker had applied (and invalidated) by then
    end, cached = svc.log_end_and_cache(req.user_id)
    if end is None or (applied is not None and position_key(applied) >= position_key(end)):
        req.prefetched = cached  # read with the log's end, after every change up to it was applied here
        return
    if not svc.stream.wait_applied(end, timeout=svc.settings.read_fence_s):
        req.degrade("stream")
