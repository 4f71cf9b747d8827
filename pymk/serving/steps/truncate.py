"""Step 8, truncate: the first k of the (cached or fresh) list."""

from __future__ import annotations

from pymk.serving.request import Request


def run(req: Request, svc) -> None:
    req.response = req.recs[: req.k]
