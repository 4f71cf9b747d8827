"""Step 3, Stage 1: candidates from every enabled source, with the user's blocks, dismissals, new
friends excluded (erased accounts and former friends: by Stage 1 itself) (read in one round trip)."""

from __future__ import annotations

import numpy as np

from pymk.serving import batch
from pymk.serving.request import Request


def run(req: Request, svc) -> None:
    excluded, missed = svc.actions.excluded(req.user_id)
    if missed:
        req.degrade("actions")
    ids = np.fromiter(excluded, np.int64, len(excluded))
    dense = svc.model.index_of(ids) if ids.size else ids
    req.excluded = np.unique(dense[dense >= 0])
    users = np.array([req.idx], np.int64)
    st1 = svc.model.stage1
    if st1.embeddings is not None and not st1.has_embedding(users)[0]:
        req.degrade("embedding")
    req.batch = batch.stage1(svc.model, users, [req.excluded], req.depth)
    svc.take_store_degradation(req)
    svc.metrics.candidates.labels("stage1", "out").inc(int(req.batch.count[0]))
