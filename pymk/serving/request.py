"""One recommendation request as it moves through the flow's steps."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class NotEligible(LookupError):
    """The user cannot be served (not in the model): the API answers 404."""


@dataclass
class Request:
    user_id: int  # external id
    k: int
    depth: int  # how many ranked recommendations to keep (>= k; what the cache stores)
    idx: int = -1  # dense index, set by eligibility
    excluded: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # dense ids never to return
    batch: object = None  # CandidateBatch from Stage 1
    X: np.ndarray | None = None  # (1, C, F) pair features for a learned ranker
    ranked: object = None  # RankedBatch
    answer: object = None  # `pymk.serving.batch.Answer`: what passed the filter (and, after explain, samples)
    recs: list | None = None  # [[candidate id, score, mutual friends, mutual sample, source], ...]
    response: list | None = None
    cached: bool = False
    prefetched: tuple | None = None  # (cached list or None, token) read by `sync` with the log's end
    cache_token: int | None = None  # the user's invalidation count when the request read the cache
    degraded: list[str] = field(default_factory=list)  # stores this request had to do without
    timings: dict[str, float] = field(default_factory=dict)

    def degrade(self, source: str) -> None:
        if source not in self.degraded:
            self.degraded.append(source)
