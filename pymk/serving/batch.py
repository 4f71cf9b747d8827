"""The recommend path, over a batch of users: the one implementation of stage1 -> features -> rank ->
filter -> explain.

The service's request flow (`pymk.serving.flow`) runs each of these as its own timed step for one user;
`pymk recommend` runs them over batches of users (`recommend`). Both therefore answer alike: same
candidates, scores, mutual counts, samples and order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pymk.candidates.base import CandidateBatch
from pymk.ranking import RankedBatch
from pymk.ranking.explain import mutual_sample, mutual_sample_via_friends


@dataclass
class Answer(RankedBatch):
    """A `RankedBatch` after the filter (only what passed, best first, -1 padded past `count[b]`), with the
    explanation. Shapes: sample (B, d, 3) dense mutual friends, -1 padded (filled by `explain`)."""

    sample: np.ndarray | None = None


def stage1(model, users: np.ndarray, excluded: list | None, depth: int) -> CandidateBatch:
    """Stage 1 for dense `users` (B,), never returning excluded[b] (dense ids) to user b."""
    return model.candidates(users, k=max(depth, model.config.candidates.k), blocked=excluded)


def features(model, batch: CandidateBatch) -> tuple[np.ndarray | None, np.ndarray]:
    """The learned ranker's pair features (None for a heuristic ranker) and which users lacked a feature row.
    Shapes: X (B, C, F); missing (B,) bool."""
    ranker = model.ranker
    if not hasattr(ranker, "predict"):
        return None, np.zeros(batch.users.size, bool)
    from pymk.features.pairs import pair_features

    return pair_features(batch, ranker.graph, ranker.store)


def rank(model, batch: CandidateBatch, X: np.ndarray | None, depth: int) -> RankedBatch:
    ranker = model.ranker
    scores = ranker.predict(batch, X) if X is not None else None
    return ranker.rank(batch, depth, scores=scores)


def filter(model, ranked: RankedBatch, excluded: list | None, *, view=None) -> Answer:  # noqa: A001 - the step
    """Drops self, friends, excluded ids, erased and undiscoverable users (Stage 1 already leaves them out:
    this is the last guard before an answer leaves), keeping order. `view`: the lists the ranking tier read
    for this batch (`CandidateBatch.view`; None: the model's graph)."""
    graph = model.graph if view is None else view
    erased = getattr(model.graph, "erased", None)
    hidden = getattr(model.graph, "hidden_index", None)
    valid = np.arange(ranked.cand.shape[1])[None, :] < ranked.count[:, None]
    keep = valid.copy()
    for b, u in enumerate(ranked.users.tolist()):
        if u < 0:
            keep[b] = False
            continue
        cand = ranked.cand[b, :int(ranked.count[b])]
        drop = (cand == u) | np.isin(cand, graph.neighbors(u))
        if excluded is not None and excluded[b] is not None and len(excluded[b]):
            drop |= np.isin(cand, excluded[b])
        if erased is not None:
            drop |= erased[cand]
        if hidden is not None and hidden.size:
            drop |= np.isin(cand, hidden)
        keep[b, :cand.size] = ~drop
    order = np.argsort(~keep, axis=1, kind="stable")  # kept first, in ranked order

    def take(a, fill):
        out = np.take_along_axis(a, order, axis=1)
        out[~np.take_along_axis(keep, order, axis=1)] = fill
        return out

    return Answer(ranked.users, take(ranked.cand, -1), take(ranked.score, -np.inf), take(ranked.mutual, 0),
                  take(ranked.source, 0), keep.sum(axis=1).astype(np.int64))


def explain(model, answer: Answer, m: int = 3, *, view=None) -> Answer:
    """Up to m mutual friends per recommendation (least-connected first); `view` as in `filter`."""
    if view is None:
        answer.sample = mutual_sample(model.graph, answer.users, answer.cand, answer.count, m)
    else:
        local = mutual_sample_via_friends(view.csr, view.local(answer.users), view.local(answer.cand), answer.count,
                                          m)  # the tier read the friends' lists, not always the candidates'
        answer.sample = view.glob(local)
    return answer


def recommend(model, users: np.ndarray, k: int, *, excluded: list | None = None) -> Answer:
    """The whole path for a batch of dense users (-1: unknown, an empty row): top-k after the filter."""
    users = np.asarray(users, np.int64)
    batch = stage1(model, users, excluded, k)
    X, _ = features(model, batch)
    return explain(model, filter(model, rank(model, batch, X, k), excluded, view=batch.view), view=batch.view)
