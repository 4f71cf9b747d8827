"""Step 0, sync: the worker has applied every change any worker acknowledged before this request.

A change posted to one worker is logged, then acknowledged once that worker applied it; the others apply it
when they next read the log. Without this step a request reaching another worker in that window could still
see a blocked pair, a hidden or erased user, or a stale cached list. Here the request reads the log's end
(one Redis round trip, or a read of the file log's last bytes) and waits until this worker's stream worker
has applied the log that far: every acknowledged change is visible to every later request, whichever worker
answers it. Past `read_fence_s` it answers with what it has, flagged degraded ("stream")."""

from __future__ import annotations

from pymk.serving.request import Request


def run(req: Request, svc) -> None:
    if svc.stream is None or svc.settings.read_fence_s <= 0:
        return
    end = svc.log_end()
    if end is not None and not svc.stream.wait_applied(end, timeout=svc.settings.read_fence_s):
        req.degrade("stream")
