"""The HTTP API: recommendations for one user, from a loaded model, with embedded stores.

    GET /v1/users/{user_id}/recommendations?k=20   -> 200 JSON, 404 unknown user, 422 bad parameter
    GET /healthz                                   -> 200 {"status": "ok", "model_version": ...}
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, HTTPException, Path, Query
from pydantic import BaseModel

from pymk import __version__
from pymk.candidates.base import source_label
from pymk.pipeline.model import Model
from pymk.ranking.explain import mutual_sample

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_K = 1000


class Recommendation(BaseModel):
    user_id: int
    rank: int
    score: float
    mutual_friends: int
    mutual_sample: list[int]  # up to 3 mutual friends (external ids), least-connected first
    source: str


class RecommendationsResponse(BaseModel):
    user_id: int
    k: int
    model_version: str
    recommendations: list[Recommendation]
    # sources that could not serve this request fully: "embedding" (the user has no embedding: other
    # Stage-1 sources only), "features" (the user or a candidate has no stored ranker features: ranked
    # with those columns missing)
    degraded: list[str] = []


class Health(BaseModel):
    status: str
    model_version: str
    users: int
    edges: int


def create_app(model: Model) -> FastAPI:
    """A FastAPI app serving `model` (loaded once; numba kernels are safe to call from threads)."""
    app = FastAPI(title="pymk", version=__version__,
                  description="People You May Know: friend recommendations with mutual-friend counts.")

    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        return Health(status="ok", model_version=model.version, users=model.graph.num_users,
                      edges=model.graph.num_edges)

    @app.get("/v1/users/{user_id}/recommendations", response_model=RecommendationsResponse,
             responses={404: {"description": "user not in the model"}})
    def recommendations(
        user_id: Annotated[int, Path(ge=INT64_MIN, le=INT64_MAX, description="external user id")],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="how many recommendations")] = 20,
    ) -> RecommendationsResponse:
        idx = int(model.index_of([user_id])[0])
        if idx < 0:
            raise HTTPException(status_code=404, detail=f"user {user_id} is not in the model")
        missing_before = model.stage1.missing_embedding
        ranked = model.recommend([idx], k)
        n = int(ranked.count[0])
        degraded = []
        if model.stage1.missing_embedding > missing_before:
            degraded.append("embedding")
        last = getattr(model.ranker, "last_degraded", None)
        if last is not None and bool(last[0]):
            degraded.append("features")
        ids = model.graph.ids
        sample = mutual_sample(model.graph, ranked.users, ranked.cand, ranked.count)[0]
        recs = [
            Recommendation(user_id=int(ids[ranked.cand[0, j]]), rank=j + 1, score=float(ranked.score[0, j]),
                           mutual_friends=int(ranked.mutual[0, j]),
                           mutual_sample=[int(ids[v]) for v in sample[j] if v >= 0],
                           source=source_label(int(ranked.source[0, j])))
            for j in range(n)
        ]
        return RecommendationsResponse(user_id=user_id, k=k, model_version=model.version, recommendations=recs,
                                       degraded=degraded)

    return app
