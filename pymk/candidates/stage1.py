"""Stage 1: merges the candidate sources into one candidate set per user (default 1,000).

Sources, in order: friends-of-friends (top-k by the configured heuristic); when the model has GNN
embeddings, their nearest users by inner product through the ANN index (exact search without one)
(at most `embedding_share` of the slots while friends-of-friends has more to give, every free slot
otherwise); then a popularity fill for users whose set is still short. A candidate found by several
sources carries all their tags. A user without an embedding (joined after the build, or removed from
the index) is served from the other sources and counted in `missing_embedding`.
"""

from __future__ import annotations

import logging

import numpy as np

from pymk.candidates.base import SOURCE_EMBEDDING, SOURCE_FOF, SOURCE_POPULAR, CandidateBatch
from pymk.candidates.fof import blocked_csr, friends_of_friends
from pymk.candidates.popular import fill_from_pool, popularity_order
from pymk.config import CandidatesConfig
from pymk.graph.snapshot import CSRGraph

log = logging.getLogger("pymk.candidates")


class Stage1:
    """Candidate generation over one graph.

    Args:
        graph: the graph recommendations are made on.
        config: sizes and sources (`pymk.config.CandidatesConfig`).
        traversal: where friends-of-friends walks: a `ShardedGraph` over the same users, or the graph.
        embeddings: (m, d) user embeddings for the embedding source (row i = user i; m may be below the
            user count when users joined after the build), or None.
        ann: an `AnnIndex` / `ShardedAnnIndex` over the embeddings; None = exact search.
    """

    def __init__(self, graph: CSRGraph, config: CandidatesConfig, *, traversal=None, embeddings=None, ann=None):
        self.graph = graph
        self.embeddings = embeddings
        self.ann = ann
        self.missing_embedding = 0  # users asked for whom the embedding source had nothing
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
        feats = {"cn": fof.cn, "aa": fof.aa, "ra": fof.ra}
        if self.embeddings is not None and self.config.embedding_share > 0 and k > 0:
            cand, count, source, feats = self._merge_embeddings(users, k, cand, count, source, feats, blocked)
        if self._pool is not None:
            blk_ptr, blk_idx = blocked_csr(blocked, users.size, self.graph.num_users)
            before = fill_from_pool(self.graph, users, cand, count, self._pool, blk_ptr, blk_idx)
            filled = (np.arange(cand.shape[1])[None, :] >= before[:, None]) & (cand >= 0)
            source[filled] = SOURCE_POPULAR
        return CandidateBatch(users, cand, count, source, feats)

    def embedding_search(self, users: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest users by embedding (self and friends excluded): (scores, idx), (B, <= k), -1 padded."""
        from pymk.candidates.ann import search_users
        from pymk.candidates.embedding import exact_search

        if self.ann is None:
            return exact_search(np.asarray(self.embeddings), users, k, self.graph)
        return search_users(self.ann, self.embeddings, users, k, self.graph)

    def _merge_embeddings(self, users, k, cand, count, source, feats, blocked):
        """Friends-of-friends first, then embedding neighbours, within the embedding share of slots."""
        valid = users >= 0
        valid[valid] = users[valid] < self.embeddings.shape[0]
        if self.ann is not None:
            valid[valid] = self.ann.contains(users[valid])
        missing = int(((users >= 0) & ~valid).sum())
        if missing:
            if self.missing_embedding == 0:
                log.warning("%d users have no embedding; served from the other sources", missing)
            self.missing_embedding += missing
        # ask for enough that k remain after dropping friends-of-friends duplicates and blocked users
        extra = int(count.max(initial=0)) + max((len(x) for x in blocked if x is not None), default=0) \
            if blocked is not None else int(count.max(initial=0))
        want = min(k + extra, self.graph.num_users)
        emb_idx = np.full((users.size, want), -1, np.int64)
        if valid.any():
            _, got = self.embedding_search(users[valid], want)
            emb_idx[np.flatnonzero(valid)[:, None], np.arange(got.shape[1])[None, :]] = got
        quota = int(round(self.config.embedding_share * k))
        out_c = np.full_like(cand, -1)
        out_s = np.zeros_like(source)
        out_f = {name: np.zeros_like(v) for name, v in feats.items()}
        out_n = np.zeros_like(count)
        for b in range(users.size):
            f = cand[b, : count[b]]
            e = emb_idx[b][emb_idx[b] >= 0]
            in_emb = np.isin(f, e)
            e = e[~np.isin(e, f)]
            if blocked is not None and blocked[b] is not None and len(blocked[b]):
                e = e[~np.isin(e, np.asarray(blocked[b], np.int64))]
            n_f = min(f.size, max(k - quota, k - e.size))
            n_e = min(e.size, k - n_f)
            out_c[b, :n_f] = f[:n_f]
            out_s[b, :n_f] = SOURCE_FOF | np.where(in_emb[:n_f], SOURCE_EMBEDDING, 0)
            for name in feats:
                out_f[name][b, :n_f] = feats[name][b, :n_f]
            out_c[b, n_f:n_f + n_e] = e[:n_e]
            out_s[b, n_f:n_f + n_e] = SOURCE_EMBEDDING
            out_n[b] = n_f + n_e
        return out_c, out_n, out_s, out_f
