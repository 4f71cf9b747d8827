"""The Stage-1 output every candidate source and every ranker agree on."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Source tags are bits, so a candidate found by several sources carries all of them.
SOURCE_FOF = 1
SOURCE_POPULAR = 2
SOURCE_EMBEDDING = 4
SOURCE_PPR = 8
SOURCE_NAMES = {SOURCE_FOF: "fof", SOURCE_PPR: "ppr", SOURCE_EMBEDDING: "embedding", SOURCE_POPULAR: "popular"}


def source_label(mask: int) -> str:
    """'fof', 'popular' or 'fof+popular' for a source bitmask."""
    return "+".join(name for bit, name in SOURCE_NAMES.items() if mask & bit) or "none"


@dataclass
class CandidateBatch:
    """Candidates for a batch of users, padded with -1 past `count[b]` in row b.

    Rows are in Stage-1 order (a source's own ranking); rankers break score ties by this order.

    Shapes:
        users: (B,) dense user indices.
        cand: (B, C) int64 dense candidate indices.
        count: (B,) int64 valid entries per row.
        source: (B, C) uint8 bitmask of SOURCE_* tags.
        features: name -> (B, C) array; at least "cn", "aa", "ra" (0 for non-2-hop candidates), and
            "ppr" (the PPR source's score, 0 where it did not score the candidate) when that source ran.
        view: in the stateless ranking tier, the lists read for this batch (`pymk.graph.request_graph`).
        rows: in the tier, the users' and candidates' feature rows read for this batch (`pymk.serving.tier`).
    """

    users: np.ndarray
    cand: np.ndarray
    count: np.ndarray
    source: np.ndarray
    features: dict[str, np.ndarray] = field(default_factory=dict)
    view: object = None  # the tier's `RequestGraph` (the lists this batch was made from); None: the graph
    rows: object = None  # the tier's `UserRows` (feature rows read for this batch); None: the ranker's store

    @property
    def valid(self) -> np.ndarray:
        """(B, C) bool mask of real entries."""
        return np.arange(self.cand.shape[1])[None, :] < self.count[:, None]

    def row(self, b: int) -> np.ndarray:
        return self.cand[b, : self.count[b]]
