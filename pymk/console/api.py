"""The operator console's JSON: what the page at `/console` draws, computed by the serving process.

    GET /v1/console/users/{id}/ego?k=10            the user's recommendations (the request flow, cache and all)
                                                   and its ego network: the user, the friends who connect it to
                                                   them, the recommended people, and the links between them
    GET /v1/console/users/{id}/explanations/{c}    "why this person": c's Stage-1 sources and position, its
                                                   mutual friends, CN / AA / RA / PPR, the ranker's score and
                                                   each feature's contribution (LightGBM `pred_contrib`)
    GET /v1/console/model                          the model card: version, build stages and their times,
                                                   `DIR/eval.json` when `pymk eval --json DIR/eval.json` wrote it
    GET /v1/console/stats                          the service's own metrics, summed over workers: latency per
                                                   step, cache hit rate, stream lag, degraded requests

All of them need the admin scope (when the model has keys). Ids are external.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from pymk.candidates.base import source_label
from pymk.console.names import UserNames
from pymk.serving import batch
from pymk.serving.request import NotEligible, Request
from pymk.serving.steps import eligibility, stage1, sync

STATIC = Path(__file__).parent / "static"  # the page, its script and style, and vendor/ (scripts/build_console.sh)
MAX_FRIENDS_DRAWN = 40  # an ego network of a user with thousands of friends stays readable
MAX_MUTUAL_LISTED = 50


class ConsoleError(LookupError):
    """Something the console cannot show for this request (the API answers 404 or 409 with the message)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _lists(g, nodes) -> list[np.ndarray]:
    """The friends lists of `nodes` (dense indices) now, in one read: the living graph's rows, or, for a
    ranking tier that holds no adjacency, one parallel round to the shard servers (`TierGraph.rows`)."""
    nodes = np.asarray(nodes, np.int64)
    if not nodes.size:
        return []
    ptr, idx = g.rows(nodes)
    return [np.asarray(idx[ptr[i]:ptr[i + 1]], np.int64) for i in range(nodes.size)]


def ego(svc, user_id: int, k: int, names: UserNames | None = None) -> dict:
    """The user's recommendations and the ego network linking it to them.

    Nodes: the user, the recommended people, and the friends through whom they are recommended (mutual friends,
    most shared first, at most MAX_FRIENDS_DRAWN). Edges: user-friend and friend-candidate (each one a mutual-
    friend link), and friendships among the drawn friends."""
    g = svc.model.graph
    try:
        req = svc.recommend(user_id, k)
    except NotEligible as exc:
        raise ConsoleError(404, str(exc)) from None
    ids = g.ids
    u = int(req.idx)
    recs = req.response
    rec_ids = [int(r[0]) for r in recs]
    rec_idx = svc.model.index_of(np.array(rec_ids, np.int64)) if rec_ids else np.zeros(0, np.int64)
    known = rec_idx >= 0
    friends, *rec_lists = _lists(g, np.concatenate([[u], rec_idx[known]]))
    links: dict[int, list[int]] = {}  # friend -> recommended people it links the user to
    for c_ext, fc in zip(np.array(rec_ids, np.int64)[known].tolist(), rec_lists, strict=True):
        for f in np.intersect1d(friends, fc).tolist():
            links.setdefault(f, []).append(c_ext)
    drawn = sorted(links, key=lambda f: (-len(links[f]), f))[:MAX_FRIENDS_DRAWN]
    drawn_set = set(drawn)
    edges = [[user_id, int(ids[f])] for f in drawn]
    edges += [[int(ids[f]), c] for f in drawn for c in links[f]]
    for f, ff in zip(drawn, _lists(g, drawn), strict=True):  # friendships among the drawn friends (circles)
        for h in ff.tolist():
            if h > f and h in drawn_set:
                edges.append([int(ids[f]), int(ids[h])])
    shown = [user_id, *[int(ids[f]) for f in drawn], *rec_ids, *(x for r in recs for x in r[3])]
    return {
        "names": (names or UserNames()).of(shown),
        "user_id": user_id, "model_version": svc.model.version, "cached": req.cached,
        "degraded": bool(req.degraded), "degraded_sources": req.degraded,
        "friends": int(friends.size), "friends_drawn": [int(ids[f]) for f in drawn],
        "recommendations": [{"user_id": c, "rank": j + 1, "score": s, "mutual_friends": m, "mutual_sample": sample,
                             "source": src} for j, (c, s, m, sample, src) in enumerate(recs)],
        "edges": edges,
    }


def explanation(svc, user_id: int, cand_id: int, depth: int = 1000, names: UserNames | None = None) -> dict:
    """Why `cand_id` is (or is not) recommended to `user_id`, from the same Stage 1 and ranker as the request
    flow: sources, position, mutual friends, the pair's signals and the learned ranker's contributions."""
    model = svc.model
    g = model.graph
    req = Request(user_id=user_id, k=depth, depth=max(depth, svc.settings.cache_depth))
    try:
        sync.run(req, svc)
        eligibility.run(req, svc)
    except NotEligible as exc:
        raise ConsoleError(404, str(exc)) from None
    c = int(model.index_of(np.array([cand_id], np.int64))[0])
    if c < 0:
        raise ConsoleError(404, f"user {cand_id} is not in the model")
    u = req.idx
    fu, fc = _lists(g, [u, c])
    mutual = np.intersect1d(fu, fc)
    degree = np.array([f.size for f in _lists(g, mutual)], np.int64)
    mutual = mutual[np.argsort(degree, kind="stable")]  # least-connected first: the most telling
    out = {"user_id": user_id, "candidate_id": cand_id, "model_version": model.version,
           "mutual_friends": int(mutual.size),
           "mutual_sample": [int(g.ids[m]) for m in mutual[:MAX_MUTUAL_LISTED].tolist()],
           "names": (names or UserNames()).of([user_id, cand_id, *g.ids[mutual[:MAX_MUTUAL_LISTED]].tolist()]),
           "friends": bool(np.isin(c, fu)), "in_stage1": False, "sources": [], "stage1_position": None,
           "signals": {}, "ranker": model.ranker_kind, "score": None, "rank": None, "contributions": None}
    if out["friends"] or c == u:
        out["reason"] = "already friends" if out["friends"] else "the user itself"
        return out
    stage1.run(req, svc)
    b = req.batch
    row = b.row(0)
    at = np.flatnonzero(row == c)
    if not at.size:
        ex = set(req.excluded.tolist())
        out["reason"] = ("excluded: blocked, dismissed or befriended since the build" if c in ex else
                         "not among Stage 1's candidates (outside every source's reach or quota)")
        return out
    j = int(at[0])
    out["in_stage1"] = True
    out["stage1_position"] = j + 1
    out["stage1_candidates"] = int(b.count[0])
    out["sources"] = source_label(int(b.source[0, j])).split("+")
    out["signals"] = {name: float(v[0, j]) for name, v in sorted(b.features.items())
                      if getattr(v, "ndim", 0) == 2 and name in ("cn", "aa", "ra", "ppr")}
    X, _ = batch.features(model, b)
    ranked = batch.rank(model, b, X, int(b.count[0]))
    pos = np.flatnonzero(ranked.cand[0, :int(ranked.count[0])] == c)
    if pos.size:
        out["rank"] = int(pos[0]) + 1
        out["score"] = float(ranked.score[0, pos[0]])
    if X is not None:  # LightGBM: per-feature contributions in the booster's raw score (SHAP values)
        from pymk.features.pairs import PAIR_FEATURES

        x = np.asarray(X[0, j], np.float64)[None, :]
        contrib = model.ranker.booster.predict(x, pred_contrib=True, num_threads=1)[0]
        out["contributions"] = {"bias": float(contrib[-1]), "features": [
            {"name": n, "value": _num(x[0, i]), "contribution": float(contrib[i])}
            for i, n in enumerate(PAIR_FEATURES)]}
        out["contributions"]["features"].sort(key=lambda f: -abs(f["contribution"]))
    return out


def _num(v: float) -> float | None:
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else v


def model_card(svc) -> dict:
    """The served version's model.json (config, stages with their times) and its evaluation, if recorded."""
    m = svc.model
    meta = m.meta
    card = {"model_version": m.version, "path": str(m.path) if m.path is not None else None,
            "created_at": meta.get("created_at"), "pymk_version": meta.get("pymk_version"),
            "source": meta.get("source"), "users": int(m.graph.num_users), "edges": int(m.graph.num_edges),
            "ranker": m.ranker_kind, "stages": meta.get("stages", {}), "executor": meta.get("executor"),
            "config": meta.get("config"), "evaluation": None}
    path = m.path / "eval.json" if m.path is not None else None
    if path is not None and path.exists():
        try:
            card["evaluation"] = json.loads(path.read_text())
        except ValueError as exc:
            card["evaluation_error"] = f"{path}: not JSON ({exc})"
    return card


def stats(svc) -> dict:
    """The Prometheus metrics of every worker, summarised: per-step mean and p50 / p99 latency (bucket
    bounds), cache hit rate, stream events and lag, degraded requests by source, Redis state."""
    fams = {f.name: f for f in text_string_to_metric_families(svc.metrics.render().decode())}
    steps: dict[str, dict] = {}
    if "pymk_step_seconds" in fams:
        buckets: dict[str, list] = {}
        for s in fams["pymk_step_seconds"].samples:
            step = s.labels.get("step")
            d = steps.setdefault(step, {"count": 0.0, "sum": 0.0})
            if s.name.endswith("_count"):
                d["count"] = s.value
            elif s.name.endswith("_sum"):
                d["sum"] = s.value
            elif s.name.endswith("_bucket"):
                buckets.setdefault(step, []).append((float(s.labels["le"]), s.value))
        for step, d in steps.items():
            b = sorted(buckets.get(step, []))
            d["mean_ms"] = 1e3 * d["sum"] / d["count"] if d["count"] else None
            d["p50_ms"], d["p99_ms"] = (_quantile(b, q) for q in (0.5, 0.99))
    requests = {"cached": 0.0, "uncached": 0.0}
    req_buckets: list = []
    if "pymk_request_seconds" in fams:
        for s in fams["pymk_request_seconds"].samples:
            if s.labels.get("endpoint") != "recommendations":
                continue
            if s.name.endswith("_count"):
                requests["cached" if s.labels.get("cached") == "true" else "uncached"] += s.value
            elif s.name.endswith("_bucket"):
                req_buckets.append((float(s.labels["le"]), s.value))
    merged: dict[float, float] = {}
    for le, v in req_buckets:
        merged[le] = merged.get(le, 0.0) + v
    cache = {}
    if "pymk_cache_requests" in fams:
        for s in fams["pymk_cache_requests"].samples:
            if s.name.endswith("_total"):
                cache[s.labels["result"]] = s.value
    looked = cache.get("hit", 0.0) + cache.get("miss", 0.0)
    degraded = {}
    if "pymk_degraded_requests" in fams:
        degraded = {s.labels["source"]: s.value for s in fams["pymk_degraded_requests"].samples
                    if s.name.endswith("_total")}
    lag = {"count": 0.0, "sum": 0.0}
    if "pymk_stream_lag_seconds" in fams:
        for s in fams["pymk_stream_lag_seconds"].samples:
            if s.name.endswith("_count"):
                lag["count"] = s.value
            elif s.name.endswith("_sum"):
                lag["sum"] = s.value
    events = sum(s.value for s in fams["pymk_stream_events"].samples if s.name.endswith("_total")) \
        if "pymk_stream_events" in fams else 0.0
    return {
        "model_version": svc.model.version, "redis": svc.redis_state(),
        "requests": requests, "request_p50_ms": _quantile(sorted(merged.items()), 0.5),
        "request_p99_ms": _quantile(sorted(merged.items()), 0.99),
        "steps": steps, "cache": cache, "cache_hit_rate": cache.get("hit", 0.0) / looked if looked else None,
        "degraded": degraded, "stream_events": events,
        "stream_lag_mean_s": lag["sum"] / lag["count"] if lag["count"] else None,
    }


def _quantile(cumulative: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound (ms) of the histogram bucket holding quantile q; None without observations."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    total = cumulative[-1][1]
    for le, count in cumulative:
        if count >= q * total:
            return None if math.isinf(le) else le * 1e3
    return None
