"""The HTTP API over a `Service` (FastAPI). Every recommendation runs the request flow of `flow.py`.

    GET  /v1/users/{user_id}/recommendations?k=20  200; 404 unknown user; 422 bad id or k
    POST /v1/users/{user_id}/dismissals            {"candidate_id": id}: never recommend it to the user again
    POST /v1/users/{user_id}/blocks                {"blocked_id": id}: neither is recommended to the other
    POST /v1/edges                                 {"src": id, "dst": id}: a new friendship
    GET  /healthz   the process answers          GET /readyz   the model is loaded and warm; Redis state
    GET  /metrics   Prometheus                   OpenAPI at /docs
The three POSTs drop the users' cached recommendations, so they take effect on the next request.
Ids are non-negative int64. Bodies above `max_body_bytes` get 413. Redis trouble never gives a 5xx:
the request is served from the embedded stores and flagged `degraded`.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import Annotated

import orjson
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field

from pymk import __version__
from pymk.serving.redis_link import RedisDown
from pymk.serving.request import NotEligible
from pymk.serving.service import Service
from pymk.serving.settings import ServeSettings, get_settings

INT64_MAX = 2**63 - 1
UserId = Annotated[int, Path(ge=0, le=INT64_MAX, description="external user id (non-negative int64)")]


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
    cached: bool
    degraded: bool
    # stores this request did without: "cache", "actions", "features", "graph" (Redis unreachable: served
    # from the embedded twin or uncached), "embedding" (the user has no embedding: other Stage-1 sources only)
    degraded_sources: list[str]
    recommendations: list[Recommendation]


class Dismissal(BaseModel):
    model_config = ConfigDict(extra="forbid")
    candidate_id: int = Field(ge=0, le=INT64_MAX)


class Block(BaseModel):
    model_config = ConfigDict(extra="forbid")
    blocked_id: int = Field(ge=0, le=INT64_MAX)


class NewEdge(BaseModel):
    model_config = ConfigDict(extra="forbid")
    src: int = Field(ge=0, le=INT64_MAX)
    dst: int = Field(ge=0, le=INT64_MAX)


class ActionResult(BaseModel):
    invalidated: list[int]  # users whose cached recommendations were dropped
    degraded: bool  # Redis did not take it yet: applied in this worker, replayed to Redis when it returns


class StreamHealth(BaseModel):
    events: int  # edge events this worker applied from the log (posted here or by any other worker)
    new_edges: int  # of which friendships the graph did not have
    refreshed: int  # embeddings recomputed
    unknown_users: int  # events naming users the model does not have (a rebuild adds them)
    lag_s: float  # posted -> refreshed, for the newest event applied


class Health(BaseModel):
    status: str
    model_version: str
    users: int
    edges: int
    redis: str  # "none" (embedded), "up", "down" (serving degraded)
    stream: StreamHealth | None = None  # None: no embeddings to refresh (edges are still logged)




class BodyLimit:
    """ASGI middleware: a request body above `limit` bytes gets 413 before any handler reads it."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(send)
        seen = 0

        async def counted():
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.limit:
                raise _TooLarge()
            return msg

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send):
        body = f'{{"detail":"request body larger than {self.limit} bytes"}}'.encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def create_app(service: Service | None = None, settings: ServeSettings | None = None) -> FastAPI:
    """A FastAPI app over `service` (or one built from `settings`, else the PYMK_* environment)."""
    if service is None:
        service = Service.from_settings(settings or get_settings())
        service.warm()
    svc = service
    model = svc.model

    @asynccontextmanager
    async def lifespan(_app):
        yield
        svc.close()
        svc.metrics.close()

    app = FastAPI(title="pymk", version=__version__, lifespan=lifespan,
                  description="People You May Know: friend recommendations with mutual-friend counts.")
    app.state.service = svc
    app.dependency_overrides[get_settings] = lambda: svc.settings  # this app's settings, not the process's

    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        st = svc.stream.stats if svc.stream is not None else None
        stream = None if st is None else StreamHealth(events=st.events, new_edges=st.new_edges, refreshed=st.refreshed,
                                                      unknown_users=st.unknown_users, lag_s=round(st.last_lag_s, 4))
        return Health(status="ok", model_version=model.version, users=model.graph.num_users,
                      edges=model.graph.num_edges, redis=svc.redis_state(), stream=stream)

    @app.get("/readyz", response_model=Health)
    def readyz() -> Health:  # the app exists only once its model is loaded and warm: ready when it answers
        return healthz()

    @app.get("/metrics", response_class=Response)
    def metrics() -> Response:
        svc.redis_state()
        return Response(svc.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/users/{user_id}/recommendations", response_model=RecommendationsResponse,
             responses={404: {"description": "user not in the model"}})
    def recommendations(
        user_id: UserId,
        k: Annotated[int | None, Query(ge=1, description="how many recommendations (default 20)")] = None,
        settings: ServeSettings = Depends(get_settings),
    ) -> RecommendationsResponse:
        t0 = time.perf_counter()
        k = settings.default_k if k is None else k
        if k > settings.max_k:
            raise HTTPException(status_code=422, detail=f"k must be at most {settings.max_k}, got {k}")
        try:
            req = svc.recommend(user_id, k)
        except NotEligible as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        # serialised here (orjson) rather than validated again by FastAPI: half a cache hit's time otherwise;
        # the shape is `RecommendationsResponse`, checked by the tests
        body = orjson.dumps({
            "user_id": user_id, "k": k, "model_version": model.version, "cached": req.cached,
            "degraded": bool(req.degraded), "degraded_sources": req.degraded,
            "recommendations": [{"user_id": c, "rank": j + 1, "score": s, "mutual_friends": m, "mutual_sample": sample,
                                 "source": src} for j, (c, s, m, sample, src) in enumerate(req.response)]})
        svc.metrics.request.labels("recommendations", str(req.cached).lower()).observe(time.perf_counter() - t0)
        return Response(body, media_type="application/json")

    def act(kind: str, user: int, other: int) -> ActionResult:
        if user == other:
            verb = {"dismissed": "dismiss", "blocked": "block", "friends": "befriend"}[kind]
            raise HTTPException(status_code=422, detail=f"user {user} cannot {verb} itself")
        degraded = False
        try:
            touched = svc.actions.add(kind, user, other)
        except RedisDown:
            touched, degraded = ([user] if kind == "dismissed" else sorted({user, other})), True
        try:
            svc.cache.invalidate(touched)
        except RedisDown:
            degraded = True
        return ActionResult(invalidated=touched, degraded=degraded)

    @app.post("/v1/users/{user_id}/dismissals", response_model=ActionResult)
    def dismiss(user_id: UserId, body: Dismissal) -> ActionResult:
        return act("dismissed", user_id, body.candidate_id)

    @app.post("/v1/users/{user_id}/blocks", response_model=ActionResult)
    def block(user_id: UserId, body: Block) -> ActionResult:
        return act("blocked", user_id, body.blocked_id)

    @app.post("/v1/edges", response_model=ActionResult)
    def new_edge(body: NewEdge) -> ActionResult:
        out = act("friends", body.src, body.dst)  # 422 for a self-loop before anything is logged
        if not svc.log_edge(body.src, body.dst):
            out.degraded = True
        return out

    app.add_middleware(BodyLimit, limit=svc.settings.max_body_bytes)
    return app
