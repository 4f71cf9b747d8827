"""Step 6, filter: never the user, a friend (in the graph or added since), a blocked or dismissed user,
an erased account.

Stage 1 already excluded them; this is the guarantee at the end of the pipeline, whatever a source or
ranker did."""

from __future__ import annotations

import numpy as np

from pymk.serving.request import Request


def run(req: Request, svc) -> None:
    r = req.ranked
    n = int(r.count[0])
    cand = r.cand[0, :n]
    graph = svc.model.graph
    friends = graph.neighbors(req.idx)
    drop = (cand == req.idx) | np.isin(cand, friends) | np.isin(cand, req.excluded)
    erased = getattr(graph, "erased", None)
    if erased is not None:
        drop |= erased[cand]
    req.keep = np.flatnonzero(~drop)
    svc.metrics.candidates.labels("filter", "in").inc(n)
    svc.metrics.candidates.labels("filter", "out").inc(int(req.keep.size))
