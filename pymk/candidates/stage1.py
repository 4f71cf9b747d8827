"""Stage 1: merges the candidate sources into one candidate set per user (default 1,000).

Sources, in order: friends-of-friends (top-k by the configured heuristic), then a popularity fill for
users whose 2-hop neighbourhood is smaller than k. Later sources (ANN over GNN embeddings) join here.
"""

from __future__ import annotations

import numpy as np

from pymk.candidates.base import SOURCE_FOF, SOURCE_POPULAR, CandidateBatch
from pymk.candidates.fof import blocked_csr, friends_of_friends
from pymk.candidates.popular import fill_from_pool, popularity_order
from pymk.config import CandidatesConfig
from pymk.graph.snapshot import CSRGraph


class Stage1:
    """Candidate generation over one graph.

    Args:
        graph: the graph recommendations are made on.
        config: sizes and sources (`pymk.config.CandidatesConfig`).
        traversal: where friends-of-friends walks: a `ShardedGraph` over the same users, or the graph.
    """

    def __init__(self, graph: CSRGraph, config: CandidatesConfig, *, traversal=None):
        self.graph = graph
        self.traversal = traversal if traversal is not None else graph
        self.config = config
        self._pool = popularity_order(graph) if config.popular_fill else None

    def generate(self, users, *, k: int | None = None, blocked=None) -> CandidateBatch:
        """Candidates for each user (dense indices, -1 = unknown user -> empty row).

        Args:
            users: (B,) dense indices.
            k: candidate-set size; defaults to the configured one.
            blocked: optional B arrays of dense indices never to return.
        """
        users = np.asarray(users, np.int64).ravel()
        k = self.config.k if k is None else k
        fof = friends_of_friends(self.traversal, users, k, score=self.config.fof.score, blocked=blocked,
                                 max_expand=self.config.fof.max_expand)
        cand, count = fof.cand, fof.count
        source = np.where(cand >= 0, SOURCE_FOF, 0).astype(np.uint8)
        if self._pool is not None:
            blk_ptr, blk_idx = blocked_csr(blocked, users.size, self.graph.num_users)
            before = fill_from_pool(self.graph, users, cand, count, self._pool, blk_ptr, blk_idx)
            filled = (np.arange(cand.shape[1])[None, :] >= before[:, None]) & (cand >= 0)
            source[filled] = SOURCE_POPULAR
        return CandidateBatch(users, cand, count, source,
                              {"cn": fof.cn, "aa": fof.aa, "ra": fof.ra})
