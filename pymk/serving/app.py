"""The HTTP API over a `Service` (FastAPI). Every recommendation runs the request flow of `flow.py`.

    GET  /v1/users/{user_id}/recommendations?k=20  200; 404 unknown user; 422 bad id or k
    POST /v1/users/{user_id}/dismissals            {"candidate_id": id}: never recommend it to the user again
    POST /v1/users/{user_id}/blocks                {"blocked_id": id}: neither is recommended to the other
    POST /v1/edges                                 {"src": id, "dst": id}: a new friendship (an unseen id is
                                                   a new user, served from its first friendship on)
    DELETE /v1/users/{a}/friends/{b}               unfriend: gone from every signal; b is never recommended
                                                   to a again, nor a to b; idempotent; 404 unknown user
    DELETE /v1/users/{user_id}                     account erasure: in no answer from the next request on;
                                                   its own recommendations 404; its stored rows deleted
    GET  /healthz   the process answers          GET /readyz   the model is loaded and warm; Redis state
    GET  /metrics   Prometheus                   OpenAPI at /docs
Every change goes through the event log to every worker; the worker that took it answers once it has
applied it, so it takes effect on the next request (cache included).
Ids are non-negative int64. Bodies above `max_body_bytes` get 413. Redis trouble never gives a 5xx:
the request is served from the embedded stores and flagged `degraded`.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import Annotated

import orjson
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field

from pymk import __version__
from pymk.serving.auth import ApiKey, KeyStore
from pymk.serving.ratelimit import RateLimiter
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
    changed: bool = True  # False: nothing to do (already friends, not friends, ...)


class UserSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # false: never recommended to anyone (the user still gets its own recommendations); JSON true / false only
    discoverable: bool = Field(strict=True)


class UserSettingsResult(BaseModel):
    user_id: int
    discoverable: bool
    degraded: bool = False  # the log did not take the change yet, or this worker had not applied it in time
    changed: bool = True


class StreamHealth(BaseModel):
    events: int  # edge events this worker applied from the log (posted here or by any other worker)
    new_edges: int  # of which friendships the graph did not have
    refreshed: int  # embeddings recomputed
    new_users: int  # users created by events naming ids the model did not have
    removed_edges: int  # friendships removed (unfriending, erasure)
    erased: int  # accounts erased
    ignored: int  # events naming an erased user (never resurrected), or unfriending an unknown one
    lag_s: float  # posted -> refreshed, for the newest event applied
    gap: str | None = None  # the log dropped events this worker had not read (a trimmed Redis stream): why


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


AUTH = {401: {"description": "no valid API key (the model has keys)"},
        403: {"description": "the key lacks the scope, or is bound to another user"},
        429: {"description": "over the key's rate limit (Retry-After: seconds)"}}


def invalid(loc: tuple, msg: str) -> HTTPException:
    """A 422 in the shape the spec documents for every validation error (FastAPI's `HTTPValidationError`)."""
    return HTTPException(status_code=422, detail=[{"type": "value_error", "loc": list(loc), "msg": msg}])


class _TooLarge(Exception):
    pass


def create_app(service: Service | None = None, settings: ServeSettings | None = None) -> FastAPI:
    """A FastAPI app over `service` (or one built from `settings`, else the PYMK_* environment)."""
    if service is None:
        service = Service.from_settings(settings or get_settings())
        service.warm()
    swapper = None

    @asynccontextmanager
    async def lifespan(_app):
        nonlocal swapper
        from pymk.pipeline.memory import HeapTrimmer, freeze_heap

        # no reference to the service is held across the yield: a swapped-out version must be free to go
        settings = app.state.service.settings
        app.state.trimmer = HeapTrimmer(settings.heap_trim_s).start()
        if settings.gc_freeze:
            freeze_heap()  # what start-up made stays out of the collections requests trigger
        if settings.publish_poll_s > 0 and app.state.service.model.path is not None:
            from pymk.serving.swap import Swapper

            swapper = Swapper(app, settings.publish_poll_s)
            swapper.start()
        yield
        app.state.trimmer.stop()
        if swapper is not None:
            swapper.stop()
        app.state.service.close()
        app.state.service.metrics.close()
        import gc

        gc.unfreeze()  # a stopped app's objects (and their reference cycles) are the collector's again

    docs = service.settings.docs
    app = FastAPI(title="pymk", version=__version__, lifespan=lifespan,
                  description="People You May Know: friend recommendations with mutual-friend counts.",
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None)
    app.state.keys = KeyStore.of_model(service.model.path) if service.model.path is not None else None
    max_k = service.settings.max_k
    limiter = RateLimiter(service.settings.rate_limit, service.settings.rate_burst)
    bearer = HTTPBearer(auto_error=False, description="an API key from `pymk keys create` (pymk.serving.auth)")

    def guard(scope: str):
        """A dependency: the request's key when the model has keys (401 without a valid one, 403 when it
        lacks `scope`); None when the model has none (served unauthenticated, on loopback only)."""
        def check(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> ApiKey | None:
            svc = app.state.service
            keys = app.state.keys
            key = None
            if keys is not None and keys.enabled:
                key = keys.verify(creds.credentials) if creds is not None else None
                if key is None:
                    svc.metrics.auth.labels("401").inc()
                    raise HTTPException(status_code=401, headers={"WWW-Authenticate": "Bearer"},
                                        detail="a valid API key is required (Authorization: Bearer KEY)")
                if not key.allows(scope):
                    svc.metrics.auth.labels("403").inc()
                    raise HTTPException(status_code=403, detail=f"key {key.id} lacks the {scope} scope")
            if limiter.enabled:
                addr = request.client.host if request.client else "-"
                caller = f"key:{key.id}" if key is not None else f"addr:{addr}"
                wait = limiter.take(caller, svc.link)
                if wait > 0:
                    svc.metrics.auth.labels("429").inc()
                    raise HTTPException(status_code=429, headers={"Retry-After": limiter.retry_after(wait)},
                                        detail=f"rate limit of {limiter.rate:g} requests/s (burst {limiter.burst}) "
                                               f"reached for {caller}")
            return key
        return check

    def as_user(key: ApiKey | None, *users: int) -> None:
        """403 unless a key bound to a user is used for that user (one of `users`)."""
        if key is not None and key.user is not None and key.user not in users:
            raise HTTPException(status_code=403, detail=f"key {key.id} acts only for user {key.user}")

    # (dependencies as defaults: the module's postponed annotations cannot name this function's locals)
    reader, actor, admin = guard("recommendations:read"), guard("actions:write"), guard("admin")
    app.state.service = service  # the version served now: `pymk publish` swaps it (`swap.py`); a request
    # reads it once and finishes on the version it started with
    app.dependency_overrides[get_settings] = lambda: app.state.service.settings  # this app's, not the process's

    def current() -> tuple[Service, object]:
        svc = app.state.service
        return svc, svc.model

    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        svc, model = current()
        st = svc.stream.stats if svc.stream is not None else None
        stream = None if st is None else StreamHealth(
            events=st.events, new_edges=st.new_edges, refreshed=st.refreshed, new_users=st.new_users,
            removed_edges=st.removed_edges, erased=st.erased, ignored=st.ignored, lag_s=round(st.last_lag_s, 4),
            gap=svc.stream.gap)
        return Health(status="ok", model_version=model.version, users=model.graph.num_users,
                      edges=model.graph.num_edges, redis=svc.redis_state(), stream=stream)

    @app.get("/readyz", response_model=Health)
    def readyz() -> Health:  # the app exists only once its model is loaded and warm: ready when it answers
        return healthz()

    metrics_guard = [Depends(guard("admin"))] if service.settings.metrics_auth else []

    @app.get("/metrics", response_class=Response, dependencies=metrics_guard)
    def metrics() -> Response:
        svc, _ = current()
        svc.redis_state()
        return Response(svc.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/users/{user_id}/recommendations", response_model=RecommendationsResponse,
             responses={404: {"description": "user not in the model"}, **AUTH})
    def recommendations(
        user_id: UserId,
        k: int | None = Query(None, ge=1, le=max_k, description=f"how many recommendations (default "
                              f"{service.settings.default_k}, at most {max_k})"),
        settings: ServeSettings = Depends(get_settings),
        key: ApiKey | None = Depends(reader),
    ) -> RecommendationsResponse:
        as_user(key, user_id)
        t0 = time.perf_counter()
        svc, model = current()
        k = settings.default_k if k is None else k
        if k > settings.max_k:  # a swapped-in version's settings (the spec states the first one's bound)
            raise invalid(("query", "k"), f"k must be at most {settings.max_k}, got {k}")
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

    def act(svc: Service, kind: str, user: int, other: int) -> ActionResult:
        if user == other:
            verb = {"dismissed": "dismiss", "blocked": "block", "friends": "befriend"}[kind]
            raise invalid(("body",), f"user {user} cannot {verb} itself")
        gone = getattr(svc.model.graph, "erased_ids", ())
        for x in (user, other):
            if x in gone:  # an erased account is never recreated by a later event
                raise HTTPException(status_code=404, detail=f"user {x} is not in the model")
        degraded = False
        try:
            touched = svc.actions.add(kind, user, other)
        except RedisDown:
            touched, degraded = ([user] if kind == "dismissed" else sorted({user, other})), True
        try:
            svc.cache.invalidate(touched)
        except RedisDown:
            degraded = True
        if kind != "friends" and svc.log_event("block" if kind == "blocked" else "dismiss", user, other) is None \
                and svc.stream_log is not None:
            degraded = True  # every worker of this machine gets it once the log takes it
        return ActionResult(invalidated=touched, degraded=degraded)

    def known(model, user_id: int) -> int:
        idx = int(model.index_of([user_id])[0])
        if idx < 0:
            raise HTTPException(status_code=404, detail=f"user {user_id} is not in the model")
        return idx

    def needs_live(svc: Service):
        if svc.stream is None or not hasattr(svc.model.graph, "erase"):
            raise HTTPException(status_code=409, detail="this service's graph does not follow live changes "
                                "(a sharded model, or PYMK_STREAM=false): rebuild to apply them")

    @app.post("/v1/users/{user_id}/dismissals", response_model=ActionResult, responses=AUTH)
    def dismiss(user_id: UserId, body: Dismissal, key: ApiKey | None = Depends(actor)) -> ActionResult:
        as_user(key, user_id)
        return act(current()[0], "dismissed", user_id, body.candidate_id)

    @app.post("/v1/users/{user_id}/blocks", response_model=ActionResult, responses=AUTH)
    def block(user_id: UserId, body: Block, key: ApiKey | None = Depends(actor)) -> ActionResult:
        as_user(key, user_id)
        return act(current()[0], "blocked", user_id, body.blocked_id)

    @app.post("/v1/edges", response_model=ActionResult, responses=AUTH)
    def new_edge(body: NewEdge, key: ApiKey | None = Depends(admin)) -> ActionResult:
        as_user(key, body.src, body.dst)
        svc, model = current()
        out = act(svc, "friends", body.src, body.dst)  # 422 for a self-loop before anything is logged
        a, b = model.index_of([body.src, body.dst]).tolist()
        out.changed = a < 0 or b < 0 or not model.graph.has_edge(a, b)
        if svc.stream is not None and svc.stream_log is not None:
            if not svc.apply_now("add", body.src, body.dst):
                out.degraded = True
        elif not svc.log_edge(body.src, body.dst):
            out.degraded = True
        return out

    @app.delete("/v1/users/{user_id}/friends/{friend_id}", response_model=ActionResult,
                responses={404: {"description": "user not in the model"}, **AUTH})
    def unfriend(user_id: UserId, friend_id: UserId, key: ApiKey | None = Depends(actor)) -> ActionResult:
        as_user(key, user_id)
        if user_id == friend_id:
            raise invalid(("path", "friend_id"), f"user {user_id} cannot unfriend itself")
        svc, model = current()
        a, b = known(model, user_id), known(model, friend_id)
        needs_live(svc)
        changed = model.graph.has_edge(a, b)
        degraded = not svc.apply_now("remove", user_id, friend_id)
        try:
            svc.cache.invalidate([user_id, friend_id])
        except RedisDown:
            degraded = True
        return ActionResult(invalidated=sorted({user_id, friend_id}), degraded=degraded, changed=changed)

    @app.get("/v1/users/{user_id}/settings", response_model=UserSettingsResult,
             responses={404: {"description": "user not in the model"}, **AUTH})
    def get_settings_(user_id: UserId, key: ApiKey | None = Depends(reader)) -> UserSettingsResult:
        as_user(key, user_id)
        _, model = current()
        known(model, user_id)
        return UserSettingsResult(user_id=user_id, changed=False,
                                  discoverable=user_id not in getattr(model.graph, "hidden_ids", ()))

    @app.put("/v1/users/{user_id}/settings", response_model=UserSettingsResult,
             responses={404: {"description": "user not in the model"}, **AUTH})
    def put_settings(user_id: UserId, body: UserSettings, key: ApiKey | None = Depends(actor)) -> UserSettingsResult:
        as_user(key, user_id)
        svc, model = current()
        known(model, user_id)
        needs_live(svc)
        changed = (user_id in model.graph.hidden_ids) == body.discoverable
        degraded = not svc.apply_now("show" if body.discoverable else "hide", user_id, user_id)
        return UserSettingsResult(user_id=user_id, discoverable=body.discoverable, degraded=degraded, changed=changed)

    @app.delete("/v1/users/{user_id}", response_model=ActionResult,
                responses={404: {"description": "user not in the model (never seen, or already erased)"}, **AUTH})
    def erase(user_id: UserId, key: ApiKey | None = Depends(admin)) -> ActionResult:
        as_user(key, user_id)
        svc, model = current()
        idx = known(model, user_id)
        needs_live(svc)
        friends = model.graph.ids[model.graph.neighbors(idx)].tolist()
        degraded = not svc.apply_now("erase", user_id, user_id)
        degraded |= not svc.erase_stored(user_id, idx)
        return ActionResult(invalidated=sorted({user_id, *friends}), degraded=degraded)

    mount_console(app, current, admin)
    app.add_middleware(BodyLimit, limit=service.settings.max_body_bytes)
    return app


def mount_console(app: FastAPI, current, admin) -> None:
    """The operator console: the page at /console (static: no data in it), its bundled scripts, and the JSON
    it reads (`pymk.console.api`), behind the admin scope."""
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    from pymk.console import api as console
    from pymk.console.names import UserNames

    static = console.STATIC
    settings = current()[0].settings
    names = UserNames.load(settings.user_names) if settings.user_names else UserNames()

    @app.get("/console", response_class=HTMLResponse, include_in_schema=False)
    def console_page() -> HTMLResponse:
        return HTMLResponse((static / "console.html").read_text())

    app.mount("/console/static", StaticFiles(directory=static, check_dir=False), name="console-static")

    def answer(fn, *args):
        try:
            return fn(*args)
        except console.ConsoleError as exc:
            raise HTTPException(status_code=exc.status, detail=str(exc)) from None

    @app.get("/v1/console/users/{user_id}/ego", responses={404: {"description": "user not in the model"}, **AUTH})
    def console_ego(user_id: UserId, k: int = Query(10, ge=1, le=100), key: ApiKey | None = Depends(admin)) -> dict:
        """The user's recommendations (the request flow, cache included) and the ego network linking it to them."""
        return answer(console.ego, current()[0], user_id, k, names)

    @app.get("/v1/console/users/{user_id}/explanations/{candidate_id}",
             responses={404: {"description": "user or candidate not in the model"}, **AUTH})
    def console_explanation(user_id: UserId, candidate_id: UserId, key: ApiKey | None = Depends(admin)) -> dict:
        """Why this person: Stage-1 sources and position, mutual friends, signals, the ranker's contributions."""
        return answer(console.explanation, current()[0], user_id, candidate_id, 1000, names)

    @app.get("/v1/console/model", responses=AUTH)
    def console_model(key: ApiKey | None = Depends(admin)) -> dict:
        """The model card: version, build stages and their times, the evaluation when `DIR/eval.json` holds one."""
        return answer(console.model_card, current()[0])

    @app.get("/v1/console/stats", responses=AUTH)
    def console_stats(key: ApiKey | None = Depends(admin)) -> dict:
        """The service's metrics summed over workers: latency per step, cache hit rate, stream, degraded."""
        return answer(console.stats, current()[0])
