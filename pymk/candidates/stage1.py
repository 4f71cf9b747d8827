"""Stage 1: merges the candidate sources into one candidate set per user (default 1,000).

Sources, in order:
    fof        friends-of-friends, top-k by the configured heuristic (Adamic-Adar);
    ppr        personalized PageRank from the user (`candidates.ppr`), reaching past two hops;
    embedding  with GNN embeddings, the nearest users by inner product through the ANN index (exact
               search without one);
    popular    a popularity fill for users whose set is still short.
Per-source quotas: each extra source (ppr, embedding) keeps up to `share * k` slots for candidates the
sources before it did not find, while friends-of-friends has more to give; slots a source cannot fill
go to the others. A candidate found by several sources carries all their tags. A user without an
embedding (joined after the build, or removed from the index) is served from the other sources and
counted in `missing_embedding`.
"""

from __future__ import annotations

import logging

import numpy as np

from pymk.candidates.base import SOURCE_EMBEDDING, SOURCE_FOF, SOURCE_POPULAR, SOURCE_PPR, CandidateBatch
from pymk.candidates.fof import blocked_csr, friends_of_friends, pair_scores
from pymk.candidates.popular import fill_from_pool, popularity_order
from pymk.candidates.ppr import personalized_pagerank
from pymk.config import CandidatesConfig
from pymk.graph.snapshot import CSRGraph

log = logging.getLogger("pymk.candidates")


class GraphReads:
    """Where Stage 1 reads the graph: here the graph in this process (friends-of-friends through `traversal`,
    which may be a `ShardedGraph`). The stateless ranking tier reads the shard servers instead
    (`pymk.serving.tier.TierReads`, one per request); both answer in global dense indices."""

    def __init__(self, graph, traversal=None):
        self.graph = graph
        self.traversal = traversal if traversal is not None else graph
        self.friends_graph = graph  # whose friendships the embedding source excludes

    def fof(self, users, k, score, blocked, max_expand):
        return friends_of_friends(self.traversal, users, k, score=score, blocked=blocked, max_expand=max_expand)

    def ppr(self, users, want, pc, blocked):
        c, sc, _ = personalized_pagerank(self.graph, users, want, alpha=pc.alpha, eps=pc.eps, beta=pc.beta,
                                         blocked=blocked)
        return c, sc

    def pair_scores(self, users, cand, mask):
        return pair_scores(self.graph, users, cand, mask)

    def fill(self, users, cand, count, pool, blocked):
        blk_ptr, blk_idx = blocked_csr(blocked, users.size, self.graph.num_users)
        return fill_from_pool(self.graph, users, cand, count, pool, blk_ptr, blk_idx)

    def finish(self, cand, count):
        """The per-request graph the later steps read (None: they read the graph)."""
        return None


class Stage1:
    """Candidate generation over one graph.

    Args:
        graph: the graph recommendations are made on.
        config: sizes and sources (`pymk.config.CandidatesConfig`).
        traversal: where friends-of-friends walks: a `ShardedGraph` over the same users, or the graph.
        embeddings: (m, d) user embeddings for the embedding source (row i = user i; m may be below the
            user count when users joined after the build), or None.
        ann: an `AnnIndex` / `ShardedAnnIndex` over the embeddings; None = exact search.
        pool: the popularity fill's order (default: the graph's users by degree).
    """

    def __init__(self, graph: CSRGraph, config: CandidatesConfig, *, traversal=None, embeddings=None, ann=None,
                 pool=None):
        self.graph = graph
        self.embeddings = embeddings
        self.ann = ann
        self.missing_embedding = 0  # users asked for whom the embedding source had nothing
        self.traversal = traversal if traversal is not None else graph
        self.config = config
        self._pool = (pool if pool is not None else popularity_order(graph)) if config.popular_fill else None

    def generate(self, users, *, k: int | None = None, blocked=None, sources: tuple[str, ...] | None = None,
                 reads=None) -> CandidateBatch:
        """Candidates for each user (dense indices, -1 = unknown user -> empty row).

        Args:
            users: (B,) dense indices.
            k: candidate-set size; defaults to the configured one.
            blocked: optional B arrays of dense indices never to return.
            sources: restrict to these of ("fof", "ppr", "embedding", "popular") (default: all enabled;
                named ones run even if disabled in the config); a lone source gets every slot.
            reads: where the graph is read (default: this process's graph, `GraphReads`).
        """
        users = np.asarray(users, np.int64).ravel()
        reads = reads if reads is not None else GraphReads(self.graph, self.traversal)
        blocked = live_exclusions(self.graph, users, blocked)
        k = self.config.k if k is None else k
        use = set(sources) if sources is not None else {"fof", "ppr", "embedding", "popular"}
        if "fof" in use:
            fof = reads.fof(users, k, fof_order(self.config), blocked, self.config.fof.max_expand)
            cand, count = fof.cand, fof.count
            feats = {"cn": fof.cn, "aa": fof.aa, "ra": fof.ra}
        else:
            cand, count = np.full((users.size, k), -1, np.int64), np.zeros(users.size, np.int64)
            feats = {"cn": np.zeros((users.size, k), np.int32), "aa": np.zeros((users.size, k)),
                     "ra": np.zeros((users.size, k))}
        source = np.where(cand >= 0, SOURCE_FOF, 0).astype(np.uint8)
        extras = []  # (tag, share, (B, m) ranked candidates, (B, m) scores or None, feature name)
        lone = len(use - {"popular"}) == 1
        want = min(k + int(count.max(initial=0)), self.graph.num_users)
        if "ppr" in use and (self.config.ppr.enabled or sources is not None) and k > 0:
            pc = self.config.ppr
            c, sc = reads.ppr(users, want, pc, blocked)
            extras.append((SOURCE_PPR, 1.0 if lone else pc.share, c, sc, "ppr"))
        served = getattr(reads, "embeddings", False)  # the ranking tier: vectors and index on the shard servers
        if "embedding" in use and (self.embeddings is not None or served) and self.config.embedding_share > 0 \
                and k > 0:
            extra_blk = max((len(x) for x in blocked if x is not None), default=0) if blocked is not None else 0
            _, c = self.embedding_rows(users, min(want + extra_blk, self.graph.num_users),
                                       friends=reads.friends_graph, reads=reads if served else None)
            extras.append((SOURCE_EMBEDDING, 1.0 if lone else self.config.embedding_share, c, None, None))
        if extras:
            cand, count, source, feats = _merge(k, cand, count, source, feats, extras, blocked)
        if self._pool is not None and "popular" in use:
            before = reads.fill(users, cand, count, self._pool, blocked)
            filled = (np.arange(cand.shape[1])[None, :] >= before[:, None]) & (cand >= 0)
            source[filled] = SOURCE_POPULAR
        # candidates the other sources added may still share friends with the user (2-hop ones past
        # friends-of-friends' top k): their mutual counts and scores are computed, not assumed 0
        todo = (np.arange(cand.shape[1])[None, :] < count[:, None]) & ((source & SOURCE_FOF) == 0)
        if todo.any() and "fof" in use:
            cn, aa, ra = reads.pair_scores(users, cand, todo)
            feats["cn"][todo], feats["aa"][todo], feats["ra"][todo] = cn, aa, ra
        view = reads.finish(cand, count)
        return CandidateBatch(users, cand, count, source, feats, view=view, rows=getattr(reads, "rows", None))

    def embedding_search(self, users: np.ndarray, k: int, *, friends=None) -> tuple[np.ndarray, np.ndarray]:
        """Nearest users by embedding (self and friends excluded): (scores, idx), (B, <= k), -1 padded.
        `friends`: whose friend lists are excluded (default: the graph)."""
        from pymk.candidates.ann import search_users
        from pymk.candidates.embedding import exact_search

        friends = self.graph if friends is None else friends
        if self.ann is None:
            return exact_search(np.asarray(self.embeddings), users, k, friends)
        return search_users(self.ann, self.embeddings, users, k, friends)

    def has_embedding(self, users: np.ndarray) -> np.ndarray:
        """(B,) bool: the user has an embedding the search can start from (and is in the index)."""
        users = np.asarray(users, np.int64)
        valid = users >= 0
        if self.embeddings is None:
            return np.zeros(users.size, bool)
        has = getattr(self.embeddings, "has", None)  # users who joined since have one only if it was estimated
        valid[valid] = has(users[valid]) if has is not None else users[valid] < self.embeddings.shape[0]
        if self.ann is not None:
            valid[valid] = self.ann.contains(users[valid])
        return valid

    def embedding_rows(self, users: np.ndarray, want: int, *, friends=None, reads=None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Embedding neighbours of each user: (scores, idx), (B, want), -inf / -1 padded; users without
        an embedding get an empty row and are counted in `missing_embedding`. Equal scores come out by lower
        index. `reads`: where the vectors and the index are (the ranking tier's `TierReads`; default: this
        process's)."""
        users = np.asarray(users, np.int64)
        here = reads if reads is not None else self
        valid = here.has_embedding(users)
        missing = int(((users >= 0) & ~valid).sum())
        if missing:
            if self.missing_embedding == 0:
                log.warning("%d users have no embedding; served from the other sources", missing)
            self.missing_embedding += missing
        scores = np.full((users.size, want), -np.inf, np.float32)
        idx = np.full((users.size, want), -1, np.int64)
        if valid.any():
            s, i = here.embedding_search(users[valid], want, friends=friends)
            # equal scores by lower index: one order whichever index, shard layout or process answered
            order = np.lexsort((np.where(i >= 0, i, np.iinfo(np.int64).max), -s), axis=-1) if s.size else None
            if order is not None:
                s, i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
            rows = np.flatnonzero(valid)[:, None]
            scores[rows, np.arange(s.shape[1])] = s
            idx[rows, np.arange(i.shape[1])] = i
        return scores, idx


def fof_order(config: CandidatesConfig) -> str:
    """The score friends-of-friends keeps its top k by: the configured one; "auto" before a build chose
    (`pymk.candidates.order`) is Adamic-Adar."""
    return "aa" if config.fof.score == "auto" else config.fof.score


def live_exclusions(graph, users: np.ndarray, blocked):
    """`blocked` plus what the living graph rules out for each user: erased accounts and undiscoverable
    users (for everyone) and the user's former friends (unfriended: never recommended back). Unchanged for
    a plain snapshot."""
    gone = getattr(graph, "erased_ids", None)
    former = getattr(graph, "unfriended", None)
    hidden = getattr(graph, "hidden_index", None)
    hidden = None if hidden is None or not hidden.size else hidden
    if not gone and not former and hidden is None:
        return blocked
    erased = graph.erased_index if gone else np.zeros(0, np.int64)
    if hidden is not None:
        erased = np.union1d(erased, hidden)
    out = []
    for b, u in enumerate(users.tolist()):
        parts = [erased]
        if blocked is not None and blocked[b] is not None:
            parts.append(np.asarray(blocked[b], np.int64).ravel())
        if former and u in former:
            parts.append(np.fromiter(former[u], np.int64, len(former[u])))
        out.append(np.unique(np.concatenate(parts)) if len(parts) > 1 else erased)
    return out


def _merge(k, cand, count, source, feats, extras, blocked):
    """Friends-of-friends first, then each extra source's new candidates within its quota, then any
    slots left to the extra sources in order. Candidates found by several sources get every tag.

    Shapes: cand (B, C) -> (B, k); extras: (tag, share, (B, m) candidates, (B, m) scores | None, name).
    """
    B = cand.shape[0]
    out_c = np.full((B, k), -1, np.int64)
    out_s = np.zeros((B, k), np.uint8)
    out_f = {name: np.zeros((B, k), v.dtype) for name, v in feats.items()}
    for *_, name in extras:
        if name is not None:
            out_f[name] = np.zeros((B, k), np.float64)
    out_n = np.zeros(B, np.int64)
    quotas = [int(round(share * k)) for _, share, _, _, _ in extras]
    for b in range(B):
        f = cand[b, : count[b]]
        seen = f
        news = []
        blk = np.asarray(blocked[b], np.int64) if blocked is not None and blocked[b] is not None else None
        for _, _, c, _, _ in extras:
            e = c[b][c[b] >= 0]
            if blk is not None and blk.size:
                e = e[~np.isin(e, blk)]
            new = e[~np.isin(e, seen)]
            news.append(new)
            seen = np.concatenate([seen, new])
        # each extra source keeps min(quota, what it has); fof takes the rest; leftovers go to extras in order
        keep = [min(q, n.size) for q, n in zip(quotas, news, strict=True)]
        n_f = min(f.size, k - sum(keep))
        free = k - n_f - sum(keep)
        for j, n in enumerate(news):
            more = min(free, n.size - keep[j])
            keep[j] += more
            free -= more
        row = [f[:n_f]] + [n[:m] for n, m in zip(news, keep, strict=True)]
        merged = np.concatenate(row)
        w = merged.size
        out_c[b, :w] = merged
        out_s[b, :n_f] = source[b, :n_f]
        for name in feats:
            out_f[name][b, :n_f] = feats[name][b, :n_f]
        pos = n_f
        for (tag, _, c, sc, name), m in zip(extras, keep, strict=True):
            out_s[b, pos:pos + m] = tag
            pos += m
            row_c = c[b]
            hit = np.isin(merged, row_c[row_c >= 0])
            out_s[b, :w][hit] |= tag  # found by this source as well
            if name is not None:  # its score as a feature for every candidate it scored
                order = np.argsort(row_c[row_c >= 0])
                sorted_c = row_c[row_c >= 0][order]
                at = np.searchsorted(sorted_c, merged[hit])
                out_f[name][b, :w][hit] = sc[b][row_c >= 0][order][at]
        out_n[b] = w
    return out_c, out_n, out_s, out_f
