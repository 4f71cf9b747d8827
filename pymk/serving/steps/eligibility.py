"""Step 1, eligibility: the user must be in the model (else 404); k within bounds was checked by the API."""

from __future__ import annotations

from pymk.serving.request import NotEligible, Request


def run(req: Request, svc) -> None:
    req.idx = int(svc.model.index_of([req.user_id])[0])
    if req.idx < 0:
        raise NotEligible(f"user {req.user_id} is not in the model")
