"""The ranker interface: score every candidate of a `CandidateBatch`, keep the top k per user."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from pymk.candidates.base import CandidateBatch


@dataclass
class RankedBatch:
    """Top-k per user, best first, padded with -1 past `count[b]`.

    Shapes: cand (B, k) int64; score (B, k) float64; mutual (B, k) int32 (mutual friends);
    source (B, k) uint8; count (B,) int64.
    """

    users: np.ndarray
    cand: np.ndarray
    score: np.ndarray
    mutual: np.ndarray
    source: np.ndarray
    count: np.ndarray


class Ranker(ABC):
    """Orders candidates. Subclasses implement `score`; `rank` validates, sorts and truncates."""

    name: str = "ranker"

    @abstractmethod
    def score(self, batch: CandidateBatch) -> np.ndarray:
        """Scores for every candidate slot, higher is better. Shapes: -> (B, C) float64."""

    def rank(self, batch: CandidateBatch, k: int, *, scores: np.ndarray | None = None) -> RankedBatch:
        """Top-k candidates per user by score; equal scores keep Stage-1 order. `scores`: (B, C) already
        computed by `score` (the serving flow times features and model apart)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        valid = batch.valid
        scores = self.score(batch) if scores is None else scores
        score = np.where(valid, scores.astype(np.float64), -np.inf)
        order = np.argsort(-score, axis=1, kind="stable")[:, :k]

        def take(a):
            return np.take_along_axis(a, order, axis=1)

        count = np.minimum(batch.count, k)
        keep = np.arange(order.shape[1])[None, :] < count[:, None]
        cand = np.where(keep, take(batch.cand), -1)
        mutual = np.where(keep, take(batch.features["cn"]), 0).astype(np.int32)
        return RankedBatch(batch.users, cand, np.where(keep, take(score), 0.0), mutual,
                           np.where(keep, take(batch.source), 0).astype(np.uint8), count)
