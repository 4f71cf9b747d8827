"""The learned ranker: LightGBM over pair features, trained without leakage on Stage 1's own output.

Training data (`training_data`), on the graph G that `pymk build` is given:
    1. internal split: hold out 10% of G's friendships (`ranker.split`: a seeded random 10%, as the
       evaluation protocol draws its test edges, or with "time" the latest 10% when edges have
       timestamps); G' = G without them. On the 40K synthetic graph, whose late edges are mostly
       triadic closures, a time split trained a ranker that lost to Adamic-Adar on the protocol's
       random test edges (R@20 0.308 vs 0.390; random split: 0.389).
    2. Stage 1 runs on G' (same config) for up to `ranker.train_users` users with held-out edges.
    3. label = 1 for a candidate that is a held-out friend, 0 for every other candidate: negatives are
       exactly what Stage 1 hands the ranker, and no feature saw the held-out edges (features, PPR and
       embeddings are all computed on G'). Every positive is kept and a random `ranker.negatives` share
       (15%) of the negatives, so that `ranker.splits` (5) splits of different held-out edges fit the
       training budget: on the shared graphs more lists beat whole lists (docs/RESULTS.md).
Objective (`ranker.objective`): "lambdarank" (per-user lists) or "binary"; "auto" trains both on 80% of
the users and keeps the one with the better recall@20 on the other 20% (recorded in ranker.json).
With `ranker.kind = "auto"` the model then serves whichever of LightGBM, Adamic-Adar, Resource
Allocation and Common Neighbours has the best recall@20 on those validation users.
At serving time the features are computed on G itself; the model is saved with its feature list and
refuses to load against another.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from pymk import __version__
from pymk.artifacts import read_artifact_meta
from pymk.candidates.base import CandidateBatch
from pymk.features.pairs import PAIR_FEATURES, pair_features
from pymk.ranking.base import Ranker

RANKER_FORMAT = "pymk-ranker"
RANKER_FORMAT_VERSION = 1
MIN_POSITIVES = 50  # below this many labelled friendships a learned ranker is noise


class RankerError(RuntimeError):
    """A ranker artifact that does not fit this pymk or this model."""


class LearnedRanker(Ranker):
    """Scores candidates with a LightGBM booster over `pair_features`.

    Args:
        booster: a `lightgbm.Booster`. graph, store: what features are computed from.
        features: the feature names the booster was trained on (must equal PAIR_FEATURES).
    """

    name = "lightgbm"

    def __init__(self, booster, graph, store, features: tuple[str, ...] = PAIR_FEATURES, meta: dict | None = None):
        if tuple(features) != PAIR_FEATURES:
            raise RankerError(f"ranker trained on features {list(features)}, this pymk computes "
                              f"{list(PAIR_FEATURES)}; retrain it with `pymk build`")
        self.booster = booster
        self.graph = graph
        self.store = store
        self.meta = meta or {}
        self.degraded = 0  # users whose features were partly missing (new users): answered anyway

    def score(self, batch: CandidateBatch) -> np.ndarray:
        return self.predict(batch, self.features(batch))

    def features(self, batch: CandidateBatch) -> np.ndarray:
        """(B, C, F) pair features (one feature-store round trip); notes users with missing features."""
        X, missing = pair_features(batch, self.graph, self.store)
        self.degraded += int(missing.sum())
        self.last_degraded = missing
        return X

    def predict(self, batch: CandidateBatch, X: np.ndarray) -> np.ndarray:
        """(B, C) model scores of `features(batch)`; padding slots 0."""
        B, C, F = X.shape
        out = np.zeros((B, C))
        valid = batch.valid
        if valid.any():
            out[valid] = self.booster.predict(X[valid], num_threads=1)
        return out

    # -- storage --------------------------------------------------------------------------------------------------
    def save(self, path: Path, extra: dict) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(path / "model.txt"))
        meta = {"format": RANKER_FORMAT, "format_version": RANKER_FORMAT_VERSION, "pymk_version": __version__,
                "features": list(PAIR_FEATURES), **extra}
        (path / "ranker.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: Path, graph, store) -> LearnedRanker:
        import lightgbm as lgb

        meta_path, meta = read_artifact_meta(path, "ranker.json", RANKER_FORMAT, RANKER_FORMAT_VERSION, RankerError,
                                             what="learned ranker", fix="rebuild the model with `pymk build`")
        if tuple(meta.get("features", ())) != PAIR_FEATURES:
            raise RankerError(f"{meta_path}: ranker trained on features {meta.get('features')}, this pymk computes "
                              f"{list(PAIR_FEATURES)}; rebuild the model")
        booster = lgb.Booster(model_file=str(path / "model.txt"))
        if booster.num_feature() != len(PAIR_FEATURES):
            raise RankerError(f"{path / 'model.txt'}: {booster.num_feature()} features, ranker.json lists "
                              f"{len(PAIR_FEATURES)}")
        return cls(booster, graph, store, tuple(meta["features"]), meta)


# -- training ----------------------------------------------------------------------------------------------------
def internal_split(graph, *, holdout: float = 0.1, seed: int = 7, by_time: bool = True):
    """(G' edges lo, hi, held-out lo, hi): the latest `holdout` share of edges by time (when the graph
    has timestamps and `by_time`), else a random share."""
    lo, hi = graph.edge_pairs()
    out = np.zeros(lo.size, bool)
    out[_split(graph, holdout, seed, by_time)] = True
    lo, hi = lo.astype(np.int64), hi.astype(np.int64)
    return lo[~out], hi[~out], lo[out], hi[out]


def _split(graph, holdout: float, seed: int, by_time: bool) -> np.ndarray:
    """The held-out friendships' numbers (friendship order of `edge_pairs`), sorted: the latest `holdout`
    share by time (ties shuffled) when `by_time` and the graph has timestamps, else a random share."""
    m = graph.num_edges
    n_out = int(round(holdout * m))
    if by_time and graph.ts is not None and m:
        from pymk.graph.subgraph import upper_values

        ts = upper_values(graph, np.asarray(graph.ts))  # each friendship's time, read in place: no search
        graph.release_pages()
        return _latest(ts, n_out, np.random.default_rng(seed))
    order = np.random.default_rng(seed).permutation(m)
    return np.sort(order[m - n_out:])


def _latest(ts: np.ndarray, n_out: int, rng, chunk: int = 1 << 22) -> np.ndarray:
    """The `n_out` latest friendships, ties at the cut broken by one random key per friendship (drawn in
    order, `rng.random(m)`): the last `n_out` of `np.lexsort((rng.random(m), ts))`, sorted, without the
    three m-long arrays that sort needs."""
    m = ts.size
    if n_out == 0:
        return np.empty(0, np.int64)
    cut = np.partition(ts, m - n_out)[m - n_out]
    later = np.flatnonzero(ts > cut)
    tied = np.flatnonzero(ts == cut)
    keys = np.empty(tied.size)
    for start in range(0, m, chunk):  # the same draws as rng.random(m), kept only where tied
        r = rng.random(min(chunk, m - start))
        a, b = np.searchsorted(tied, [start, start + r.size])
        keys[a:b] = r[tied[a:b] - start]
    take = tied[np.argsort(keys, kind="stable")[tied.size - (n_out - later.size):]]
    return np.sort(np.concatenate([later, take]))


def training_data(graph, config, *, embeddings_fn=None, log=print, executor=None) -> dict:
    """Builds (X, y, group sizes, users) from `ranker.splits` internal splits (different held-out
    edges each, where the split is random); see the module docstring.

    Args:
        graph: the build's graph G. config: `PymkConfig`.
        embeddings_fn: G' -> (n, d) embeddings, or None (no embedding features).
        executor: where each chunk of training users' Stage-1 lists and pair features are computed
            (`pymk.pipeline.executor`; default: this process). The result does not depend on it.
    """
    splits, per_split = config.ranker.splits, config.ranker.train_users
    if embeddings_fn is not None and splits > 1:
        # each split's G' needs its own GNN (embeddings that never saw its held-out edges): one split, as
        # many users, instead of `splits` GNN trainings
        log(f"ranker: with GNN embeddings, one internal split of {splits * per_split} users instead of {splits}")
        per_split, splits = splits * per_split, 1
    if executor is None:
        from pymk.pipeline.executor import LocalExecutor

        executor = LocalExecutor()
    from pymk.pipeline.memory import trim_heap

    parts = []
    for seed in range(splits):
        part = _split_data(graph, config, seed, embeddings_fn, log, per_split, executor)
        trim_heap()  # the split's G' and lists are freed: give their heap back before the next G'
        if part is not None:
            parts.append(part)
    if not parts:
        raise RankerError("no held-out friendship has a Stage-1 candidate list: the graph is too small to train "
                          "a ranker on")
    return {key: np.concatenate([p[key] for p in parts]) for key in ("X", "y", "group", "users")}


def internal_graph(graph, config, split: int = 0):
    """The ranker's internal split number `split`: (G' as a CSRGraph, held-out lo, hi). Deterministic in
    the config, so the build's GNN stage can train on exactly the G' the ranker's first split uses."""
    from pymk.graph.subgraph import without_edges

    rc = config.ranker
    held = _split(graph, rc.holdout, rc.seed + split, rc.split == "time")
    return without_edges(graph, held, narrow_ts=True)  # G' keeps the timestamps of the edges that stay


CHUNK_USERS = 256  # training users per executor call


def chunk_lists(shared, users: np.ndarray) -> tuple:
    """One chunk of training users on a split's graph: Stage-1 lists and their pair features (an executor
    task: a module-level function of (shared, item)).

    Args:
        shared: (G', its `Stage1`, feature store).
        users: (B,) dense users.
    Returns: (users (B,), cand (B, C), count (B,), X (B, C, F) float32)."""
    sub, stage1, store = shared
    batch = stage1.generate(users)
    X, _ = pair_features(batch, sub, store)
    return batch.users, batch.cand, batch.count, X


def _split_data(graph, config, seed: int, embeddings_fn, log, train_users: int, executor) -> dict:
    from pymk.candidates.stage1 import Stage1
    from pymk.features.store import InProcessFeatureStore

    rc = config.ranker
    sub, ha, hb = internal_graph(graph, config, seed)  # G's pages released: what follows reads G' only
    emb = embeddings_fn(sub) if embeddings_fn is not None else None
    store = InProcessFeatureStore.of_graph(sub, emb)
    # held-out friends per user, both directions
    src = np.concatenate([ha, hb])
    dst = np.concatenate([hb, ha])
    users = np.unique(src)
    rng = np.random.default_rng(rc.seed + seed)
    if users.size > train_users:
        users = np.sort(rng.choice(users, train_users, replace=False))
    keep = np.isin(src, users)
    keys = np.unique(src[keep] * np.int64(graph.num_users) + dst[keep])
    Xs, ys, groups, us = [], [], [], []
    t = time.perf_counter()
    chunks = [users[s:s + CHUNK_USERS] for s in range(0, users.size, CHUNK_USERS)]
    # the chunks' lists come back in order, so the negatives drawn below are the same on every executor
    shared = (sub, Stage1(sub, config.candidates, embeddings=emb), store)
    for b_users, cand, count, X in executor.map(chunk_lists, chunks, shared=shared):
        valid = np.arange(cand.shape[1])[None, :] < count[:, None]
        lab = np.isin(b_users[:, None] * np.int64(graph.num_users) + cand, keys) & valid
        for r in range(b_users.size):
            c = int(count[r])
            if c == 0:
                continue
            y = lab[r, :c]
            keep = y | (rng.random(c) < rc.negatives)  # every held-out friend, a share of the rest
            if not keep.any():
                continue
            Xs.append(X[r, :c][keep])
            ys.append(y[keep].astype(np.float32))
            groups.append(int(keep.sum()))
            us.append(int(b_users[r]))
    if not groups:
        return None
    log(f"ranker training data (split {seed}): {len(groups):,} users, {sum(groups):,} candidates, "
        f"{int(sum(y.sum() for y in ys)):,} positives ({time.perf_counter() - t:.1f}s, {executor.kind})")
    return {"X": np.concatenate(Xs), "y": np.concatenate(ys), "group": np.asarray(groups), "users": np.asarray(us)}


def _recall_at(scores, y, group, k=20) -> float:
    hits = total = 0
    s = 0
    for g in group.tolist():
        sc, lab = scores[s:s + g], y[s:s + g]
        top = np.argsort(-sc, kind="stable")[:k]
        hits += lab[top].sum()
        total += lab.sum()
        s += g
    return float(hits / max(total, 1))


def train_ranker(data: dict, config, *, log=print):
    """Fits LightGBM (objective by measurement when "auto"); returns (booster, summary)."""
    import lightgbm as lgb

    rc = config.ranker
    X, y, group = data["X"], data["y"], data["group"]
    if y.sum() < MIN_POSITIVES:
        raise RankerError(f"only {int(y.sum())} held-out friendships among the training candidates (fewer than "
                          f"{MIN_POSITIVES}): too few to train a ranker on this graph")
    rng = np.random.default_rng(rc.seed)
    is_val = rng.random(group.size) < 0.2
    row_val = np.repeat(is_val, group)
    params = {"learning_rate": rc.learning_rate, "num_leaves": rc.num_leaves, "min_data_in_leaf": 50,
              "feature_fraction": 0.9, "bagging_fraction": 0.8, "bagging_freq": 1, "seed": rc.seed,
              "verbose": -1, "num_threads": 0}
    objectives = ("lambdarank", "binary") if rc.objective == "auto" else (rc.objective,)
    results = {}
    for obj in objectives:
        p = dict(params, objective=obj)
        if obj == "lambdarank":
            p.update(metric="ndcg", eval_at=[20], lambdarank_truncation_level=40)
        else:
            p.update(metric="auc")
        tr = lgb.Dataset(X[~row_val], y[~row_val], group=group[~is_val] if obj == "lambdarank" else None,
                         feature_name=list(PAIR_FEATURES), free_raw_data=False)
        va = lgb.Dataset(X[row_val], y[row_val], group=group[is_val] if obj == "lambdarank" else None,
                         reference=tr)
        t = time.perf_counter()
        booster = lgb.train(p, tr, num_boost_round=rc.rounds, valid_sets=[va],
                            callbacks=[lgb.early_stopping(30, verbose=False)])
        rec = _recall_at(booster.predict(X[row_val]), y[row_val], group[is_val])
        results[obj] = (rec, booster, time.perf_counter() - t)
        log(f"ranker {obj}: validation recall@20 {rec:.4f}, {booster.best_iteration} rounds "
            f"({results[obj][2]:.1f}s)")
    best = max(results, key=lambda o: results[o][0])
    booster = results[best][1]
    # the heuristics on the same validation lists (ties keep Stage-1 order, as their rankers do)
    col = {f: i for i, f in enumerate(PAIR_FEATURES)}
    heuristics = {kind: round(_recall_at(X[row_val, col[f]], y[row_val], group[is_val]), 4)
                  for kind, f in (("adamic_adar", "aa"), ("resource_allocation", "ra"), ("common_neighbors", "cn"))}
    learned = round(results[best][0], 4)  # decided on the figures ranker.json records
    best_h = max(heuristics, key=heuristics.get)
    chosen = "lightgbm" if learned > heuristics[best_h] else best_h
    log(f"ranker validation recall@20: lightgbm {learned:.4f}, "
        + ", ".join(f"{k} {v:.4f}" for k, v in heuristics.items()) + f" -> {chosen}")
    gain = booster.feature_importance("gain")
    importance = {name: round(float(v / max(gain.sum(), 1e-12)), 4) for name, v in zip(PAIR_FEATURES, gain,
                                                                                         strict=True)}
    summary = {"objective": best, "chosen": chosen,
               "validation_recall@20": {**{o: round(r[0], 4) for o, r in results.items()}, **heuristics},
               "rounds": int(booster.best_iteration or booster.current_iteration()),
               "train_users": int(group.size), "rows": int(y.size), "positives": int(y.sum()),
               "importance": dict(sorted(importance.items(), key=lambda kv: -kv[1]))}
    return booster, summary
