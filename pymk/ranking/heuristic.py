"""Heuristic rankers: a candidate's score is one of its Stage-1 graph features. Adamic-Adar is the
default first ranker; the learned ranker later implements the same `Ranker` interface."""

from __future__ import annotations

import numpy as np

from pymk.candidates.base import CandidateBatch
from pymk.ranking.base import Ranker

RANKERS = {"adamic_adar": "aa", "resource_allocation": "ra", "common_neighbors": "cn"}


class HeuristicRanker(Ranker):
    """Scores candidates by one feature ("aa", "ra" or "cn")."""

    def __init__(self, feature: str = "aa"):
        self.feature = feature
        self.name = next(k for k, v in RANKERS.items() if v == feature)

    def score(self, batch: CandidateBatch) -> np.ndarray:
        return batch.features[self.feature]


def make_ranker(kind: str) -> Ranker:
    if kind not in RANKERS:
        raise ValueError(f"unknown ranker {kind!r}; choose one of {sorted(RANKERS)}")
    return HeuristicRanker(RANKERS[kind])
