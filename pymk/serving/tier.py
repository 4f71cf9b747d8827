"""The stateless ranking tier's reads: Stage 1 over the shard servers, one parallel round of calls at a time.

Per batch of users (`TierReads`, made fresh for each request):
    1. the users' lists and their friends' lists: one call to each user's home shard (its lists and the
       friends' lists it holds), then one parallel round for the friends' lists held elsewhere;
       friends-of-friends runs on them (`RequestGraph`) with the same kernel as on the whole graph;
    2. personalized PageRank as rounds of forward push (`PprWalk`, `pymk.candidates.ppr_push`): the tier
       pushes over the lists it read, then each round sends every shard the residual mass on its users and
       each shard pushes it over its own lists; the first round travels with the friends' lists of step 1.
       Pushed to the end, the estimate has the single-process guarantee (every residual below eps *
       degree) in another push order; served, it stops after `candidates.ppr.rounds` rounds (default 4),
       and the mass still to push bounds its L1 error (docs/RESULTS.md: Stage-1 recall within 0.4 point);
    3. after Stage 1, for a learned ranker, one parallel round for the candidates' lists (its pair features);
       filters and mutual-friend explanations read only the users' and friends' lists (`CandidateBatch.view`).
A shard that does not answer leaves its lists (or its share of the walk) out; the router flags the request
degraded with the shard named.
"""

from __future__ import annotations

import numpy as np

from pymk.candidates.ann import merge_nearest
from pymk.candidates.fof import FofResult, friends_of_friends, pair_scores
from pymk.candidates.ppr_push import entry_key, split_key, sum_entries
from pymk.graph.request_graph import RequestGraph
from pymk.serving.shard_router import concat_rows
from pymk.serving.shard_users import find_sorted

MAX_PUSH_ROUNDS = 64  # a safety bound; forward push ends in a few rounds (residuals fall by 1 - alpha a hop)


class PprWalk:
    """The tier's side of one batch's personalized PageRank: the residual entries (query, user, mass) between
    rounds, and the estimate gained so far; the servers keep nothing between calls.

    Args: users (B,) dense (-1: none); alpha, eps as in `pymk.candidates.ppr`.
    """

    def __init__(self, users: np.ndarray, alpha: float, eps: float):
        self.users = np.asarray(users, np.int64)
        self.alpha, self.eps = float(alpha), float(eps)
        live = np.flatnonzero(self.users >= 0)
        self.key, self.val = entry_key(live, self.users[live]), np.ones(live.size)
        self.deg = np.full(live.size, -1, np.int64)
        self.gains: list = []
        self.rounds = 0

    def push_here(self, view: RequestGraph) -> None:
        """Pushes what lies on users whose lists the tier read (no call)."""
        pushed, (self.key, self.val, self.deg) = view.held_lists().push(self.key, self.val, self.deg,
                                                                        alpha=self.alpha, eps=self.eps)
        self.gains.append(pushed)

    def _sendable(self) -> np.ndarray:
        """(e,) bool: entries some server can push (mass >= eps * degree; an unknown degree is at least 1)."""
        return (self.val >= self.eps) & ((self.deg < 0) | (self.val >= self.eps * self.deg))

    def outgoing(self, home: np.ndarray) -> dict:
        """Takes the entries some server can push out of the state: {shard: (key, mass)} by the users' home
        shards."""
        send = self._sendable()
        if not send.any():
            return {}
        key, val = self.key[send], self.val[send]
        self.key, self.val, self.deg = self.key[~send], self.val[~send], self.deg[~send]
        t = home[split_key(key)[1]]
        return {int(s): (key[t == s], val[t == s]) for s in np.unique(t).tolist()}

    def absorb(self, replies) -> None:
        """The servers' replies of one round, (pushed, rest) each: the estimate they gained, and the residual
        they hand back (summed per entry with what the tier kept)."""
        rests = [(self.key, self.val, self.deg)]
        for pushed, rest in replies:
            self.gains.append(pushed)
            rests.append(rest)
        self.key, self.val, self.deg = sum_entries(*(np.concatenate([r[i] for r in rests]) for i in range(3)))

    def left(self) -> float:
        """The mass still to push (the bound on the estimate's L1 error if the walk stops here)."""
        return float(self.val[self._sendable()].sum())

    def top(self, k: int, beta: float, view: RequestGraph, blocked=None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k non-friends per query by estimate / degree^beta; ties by lower index, as in one process.
        Returns cand (B, k) int64 (-1 pad), score (B, k) float64 (0 pad)."""
        users = self.users
        out_c = np.full((users.size, k), -1, np.int64)
        out_s = np.zeros((users.size, k), np.float64)
        gains = [g for g in self.gains if g[0].size]
        if not gains or k <= 0:
            return out_c, out_s
        p_key, p_val, p_deg = sum_entries(*(np.concatenate([g[i] for g in gains]) for i in range(3)))
        q, node = split_key(p_key)
        score = p_val / np.maximum(p_deg, 1).astype(np.float64) ** beta
        for b in np.flatnonzero(users >= 0).tolist():
            lo, hi = np.searchsorted(q, [b, b + 1])
            c, s = node[lo:hi], score[lo:hi]  # ascending user ids
            ex = [[users[b]], view.neighbors(users[b])]
            if blocked is not None and blocked[b] is not None:
                ex.append(np.asarray(blocked[b], np.int64).ravel())
            keep = ~np.isin(c, np.concatenate(ex)) & (s > 0)
            c, s = c[keep], s[keep]
            order = np.argsort(-s, kind="mergesort")[:k]
            out_c[b, :order.size] = c[order]
            out_s[b, :order.size] = s[order]
        return out_c, out_s


def push_rounds(router, walk: PprWalk, view: RequestGraph, rounds: int | None) -> None:
    """Up to `rounds` more rounds of push calls (None: until nothing is left to push), the tier pushing over its
    own lists before each and after the last; the mass still to push then is added to `router.stats.ppr_left`."""
    limit = MAX_PUSH_ROUNDS if rounds is None else rounds
    for _ in range(limit):
        walk.push_here(view)
        out = walk.outgoing(router.plan.home)
        if not out:
            return
        calls = [(s, (key, val, walk.alpha, walk.eps)) for s, (key, val) in out.items()]
        _absorb(router, walk, calls, router.call_many("ppr_push", calls))
    walk.push_here(view)
    router.stats.ppr_left += walk.left()


def _absorb(router, walk: PprWalk, calls, replies, *, counted: bool = False) -> None:
    """One round's replies into the walk; `counted`: the calls were counted already (lists in the same call)."""
    walk.rounds += 1
    router.stats.ppr_rounds += 1
    got = []
    for (s, args), reply in zip(calls, replies, strict=True):
        if reply is None:  # that shard's share of the walk is lost (the request is flagged degraded)
            continue
        got.append(reply[-2:])
        # 8-byte words moved: (key, mass) out, (key, gain, degree) and (key, mass, degree) back
        words = 2 * args[-4].size + 3 * (reply[-2][0].size + reply[-1][0].size)
        if counted:
            router.stats.entries += words
        else:
            router.stats.count(s, 0, words)
    walk.absorb(got)


def two_hop_graph(router, users: np.ndarray, walk: PprWalk | None = None, rows: UserRows | None = None
                  ) -> RequestGraph:
    """The lists of `users` and of their friends, in two rounds: each user's home shard (its list and the
    friends' lists held there), then one call per shard for the other friends' lists. With a `walk`, the
    tier first pushes it over the lists of the first round, and the second round carries the mass on each
    shard's users too (`ShardServer.lists_push`): PPR's first round costs no round trip of its own. With
    `rows`, the first round also brings the users' query vectors and feature rows into it."""
    users = np.unique(np.asarray(users, np.int64)[np.asarray(users) >= 0])
    if not users.size:
        return RequestGraph.empty()
    home = router.plan.home[users]
    parts, held_all, friends = [], [], []
    for t in np.unique(home).tolist():
        group = users[home == t]
        first = router.gather(t, group, rows is not None)
        if first is None:  # the home shard is down: these users read friendless (flagged degraded)
            continue
        f_ptr, f_idx, held, h_ptr, h_idx = first[:5]
        if rows is not None:
            rows.add(group, *first[5:])
        parts += [(group, f_ptr, f_idx), (held, h_ptr, h_idx)]
        held_all.append(held)
        friends.append(np.asarray(f_idx, np.int64))
    have = np.concatenate([users] + held_all)
    need = np.setdiff1d(np.concatenate(friends) if friends else np.zeros(0, np.int64), have)
    out = {}
    if walk is not None:
        walk.push_here(RequestGraph(*concat_rows(parts)))
        out = walk.outgoing(router.plan.home)
    if not need.size and not out:
        return RequestGraph(*concat_rows(parts))
    t_need = router.plan.home[need]
    empty_k, empty_v = np.zeros(0, np.int64), np.zeros(0)
    calls = []
    for s in sorted(set(np.unique(t_need).tolist()) | set(out)):
        key, val = out.get(s, (empty_k, empty_v))
        calls.append((s, (need[t_need == s], key, val, walk.alpha if walk else 0.0, walk.eps if walk else 0.0)))
    replies = router.call_many("lists_push", calls)
    for (s, args), reply in zip(calls, replies, strict=True):
        if reply is not None:
            parts.append((args[0], reply[0], reply[1]))
            router.stats.count(s, args[0].size, int(reply[0][-1]))
    if out:
        _absorb(router, walk, calls, replies, counted=True)
    return RequestGraph(*concat_rows(parts))


def distributed_ppr(router, users: np.ndarray, k: int, *, alpha: float, eps: float, beta: float, view: RequestGraph,
                    blocked=None, rounds: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top-k non-friends of each user by personalized PageRank / degree^beta, pushed where the lists are.

    The tier pushes what lies on users whose lists it read (the users and their friends: the first two hops
    cost no call), then sends each home shard the residual on its users; the shard pushes it on over its
    own lists and hands back what leaves them. Rounds go on until every residual is below eps * degree, or
    for at most `rounds` rounds of calls (0: no bound): the mass still to push then bounds the L1 error of
    the estimate (it would have spread as PPR from where it lies), and is counted in `router.stats.ppr_left`.

    Args:
        router: the `ShardRouter`. users: (B,) dense (-1: empty row). view: holds the users' and friends'
            lists (friends are excluded). blocked: optional B arrays never returned.
    Returns:
        cand (B, k) int64 (-1 pad), score (B, k) float64 (0 pad).
    """
    walk = PprWalk(users, alpha, eps)
    push_rounds(router, walk, view, rounds or None)
    return walk.top(k, beta, view, blocked)


class UserRows:
    """The per-user rows one request read from the users' home shards: query vectors and feature rows, by
    global index. Its `fetch` / `width` / `emb_dim` are the feature-store interface
    (`pymk.features.pairs.pair_features`).

    Args: vec_dim: the query vectors' width (0: none served); width, emb_dim: the feature rows' width and
    their trailing embedding columns (0: none served).
    """

    def __init__(self, vec_dim: int = 0, width: int = 0, emb_dim: int = 0):
        self.vec_dim, self.width, self.emb_dim = int(vec_dim), int(width), int(emb_dim)
        self._vec = [(np.zeros(0, np.int64), np.zeros((0, self.vec_dim), np.float32), np.zeros(0, bool))]
        self._feat = [(np.zeros(0, np.int64), np.zeros((0, self.width), np.float32))]
        self._index = None

    def add(self, users, vec=None, has=None, feat=None) -> None:
        """Rows of `users` (q,): vec (q, d), has (q,) bool, feat (q, F); any may be None or empty-width."""
        users = np.asarray(users, np.int64)
        if vec is not None and self.vec_dim and vec.shape[1] == self.vec_dim:
            self._vec.append((users, np.asarray(vec, np.float32), np.asarray(has, bool)))
        if feat is not None and self.width and feat.shape[1] == self.width:
            self._feat.append((users, np.asarray(feat, np.float32)))
        self._index = None

    def _tables(self):
        if self._index is None:
            vu = np.concatenate([p[0] for p in self._vec])
            fu = np.concatenate([p[0] for p in self._feat])
            vo, fo = np.argsort(vu, kind="stable"), np.argsort(fu, kind="stable")
            self._index = (vu[vo], np.concatenate([p[1] for p in self._vec])[vo],
                           np.concatenate([p[2] for p in self._vec])[vo],
                           fu[fo], np.concatenate([p[1] for p in self._feat])[fo])
        return self._index

    def has_features(self, users) -> np.ndarray:
        """(q,) bool: a feature row of the user was read (or its shard answered that it has none)."""
        return find_sorted(self._tables()[3], users)[1]

    def vectors(self, users) -> tuple[np.ndarray, np.ndarray]:
        """(q, d) float32 query vectors (zeros where none) and (q,) bool has-an-embedding."""
        vu, vec, has, _, _ = self._tables()
        users = np.asarray(users, np.int64).ravel()
        pos, ok = find_sorted(vu, users)
        ok &= has[pos] if has.size else ok
        return np.where(ok[:, None], vec[pos] if vec.size else 0.0, 0.0).astype(np.float32), ok

    def fetch(self, users) -> np.ndarray:
        """(m,) dense indices -> (m, F) float32 feature rows; NaN rows for users none was read of (-1 too)."""
        _, _, _, fu, feat = self._tables()
        users = np.asarray(users, np.int64).ravel()
        out = np.full((users.size, self.width), np.nan, np.float32)
        pos, ok = find_sorted(fu, users)
        out[ok] = feat[pos[ok]]
        return out


class ShardFeatures:
    """The learned ranker's feature store on a ranking tier: each user's row from its home shard, one parallel
    round per `fetch` (a request's rows usually come with its other reads instead: `UserRows`).

    Args: router: the `ShardRouter`; width, emb_dim: the rows' width and trailing embedding columns."""

    def __init__(self, router, width: int, emb_dim: int = 0):
        self.router, self._width, self.emb_dim = router, int(width), int(emb_dim)
        self.round_trips = 0

    @property
    def width(self) -> int:
        return self._width

    def fetch(self, users) -> np.ndarray:
        users = np.asarray(users, np.int64).ravel()
        self.round_trips += 1
        rows = UserRows(0, self._width, self.emb_dim)
        _, (fu, feat) = self.router.fetch_rows(np.zeros(0, np.int64), users[users >= 0])
        rows.add(fu, feat=feat)
        return rows.fetch(users)


class TierReads:
    """Stage 1's reads (`pymk.candidates.stage1.GraphReads`' interface) over the shard servers, for one batch.

    Args:
        router: the `ShardRouter`. users: (B,) dense, the batch Stage 1 is asked for.
        candidate_lists: read the candidates' lists after Stage 1 (a learned ranker's pair features need them).
        ppr: the PPR config (`PprConfig`) when PPR runs: its walk starts with the friends' lists' round.
        served: what the shard servers hold besides lists (`ShardRouter.describe`): with embeddings, the
            embedding source searches the shards' ANN indexes from the users' vectors (read in the first
            round); with `features`, the users' and the candidates' feature rows come with the first and the
            last rounds (`rows`, the learned ranker's store for this batch).
        features: read feature rows (a learned ranker that reads them from the shard servers).
        k: Stage 1's candidate count: with embeddings, the search round is sent right after the first round,
            2k deep (Stage 1 asks for at most k + the friends-of-friends count), and its replies read when the
            embedding source runs (a deeper ask then makes a round of its own).
    """

    def __init__(self, router, users: np.ndarray, *, candidate_lists: bool = True, ppr=None,
                 served: dict | None = None, features: bool = False, k: int = 0):
        self.router = router
        self.candidate_lists = candidate_lists
        served = served or {}
        self.embeddings = served.get("emb_dim", 0) > 0
        self.features = features and served.get("feature_width", 0) > 0
        self.rows = None
        if self.embeddings or self.features:
            self.rows = UserRows(served.get("emb_dim", 0), served.get("feature_width", 0) if self.features else 0,
                                 served.get("feature_emb_dim", 0))
        self.walk = PprWalk(users, ppr.alpha, ppr.eps) if ppr is not None else None
        self.view = two_hop_graph(router, users, self.walk, self.rows)
        self._search = None
        # the search round runs on the servers while PPR pushes (not for HNSW, whose depth changes its answers)
        if self.embeddings and k > 0 and served.get("ann") != "hnsw":
            self._search = self._start_search(np.asarray(users, np.int64), 2 * k)

    def _start_search(self, users: np.ndarray, k: int) -> tuple:
        """Sends the embedding search of the users who have a vector, deep enough for `k` after self and
        friends are dropped. Returns (users searched, the friends excluded per user, depth, the round)."""
        vec, has = self.rows.vectors(users)
        users = users[has]
        mine = [np.concatenate([[u], self.view.neighbors(u)]) for u in users.tolist()]
        ask = k + max((x.size for x in mine), default=0)  # the excluded take at most this many top slots
        return users, mine, ask, self.router.start_search(vec[has], ask)

    @property
    def friends_graph(self):
        return self.view

    def fof(self, users, k, score, blocked, max_expand) -> FofResult:
        v = self.view
        lu = v.local(users)
        blk = None if blocked is None else [None if x is None else _local_only(v, x) for x in blocked]
        out = friends_of_friends(v.csr, lu, min(k, max(v.csr.num_users, 0)), score=score, blocked=blk,
                                 max_expand=max_expand)
        cand = np.full((lu.size, k), -1, np.int64)
        w = out.cand.shape[1]
        cand[:, :w] = v.glob(out.cand)
        pad = [(0, 0), (0, k - w)]
        return FofResult(cand, np.pad(out.cn, pad), np.pad(out.aa, pad), np.pad(out.ra, pad), out.count)

    def ppr(self, users, want, pc, blocked):
        walk = self.walk if self.walk is not None else PprWalk(users, pc.alpha, pc.eps)
        # the walk's first round came with the friends' lists
        push_rounds(self.router, walk, self.view, max(pc.rounds - walk.rounds, 0) if pc.rounds else None)
        return walk.top(want, pc.beta, self.view, blocked)

    def pair_scores(self, users, cand, mask):
        """CN / AA / RA of the masked slots over the users' and friends' lists (a candidate named in no friend's
        list shares no friend with the user: zeros)."""
        v = self.view
        lu, lc = v.local(users), v.local(cand)
        inside = mask & (lc >= 0) & (lu >= 0)[:, None]
        out = [np.zeros(int(mask.sum())) for _ in range(3)]
        if inside.any():
            got = pair_scores(v.csr, lu, lc, inside)
            at = inside[mask]
            for o, g in zip(out, got, strict=True):
                o[at] = g
        return out

    def fill(self, users, cand, count, pool, blocked):
        """Appends `pool` users (most friends first) to short rows, skipping self, friends, blocked and
        those already there. Returns each row's count before."""
        before = count.copy()
        width = cand.shape[1]
        for b, u in enumerate(np.asarray(users).tolist()):
            if u < 0 or count[b] >= width:
                continue
            ex = [[u], self.view.neighbors(u), cand[b, :count[b]]]
            if blocked is not None and blocked[b] is not None:
                ex.append(np.asarray(blocked[b], np.int64).ravel())
            add = pool[~np.isin(pool, np.concatenate(ex))][:width - count[b]]
            cand[b, count[b]:count[b] + add.size] = add
            count[b] += add.size
        return before

    def has_embedding(self, users) -> np.ndarray:
        """(B,) bool: the user's home shard holds its embedding (and has it in its ANN shard)."""
        return self.rows.vectors(users)[1]

    def embedding_search(self, users, k: int, *, friends=None) -> tuple[np.ndarray, np.ndarray]:
        """Nearest users by embedding over every shard's ANN index (one parallel round), merged, self and
        friends excluded, as `pymk.candidates.ann.search_users` does over the whole index (the friends are
        the view's: `friends` is this view, `friends_graph`).
        Returns (scores, idx), (B, k) float32 / int64, -inf / -1 padded."""
        users = np.asarray(users, np.int64)
        out_s = np.full((users.size, k), -np.inf, np.float32)
        out_i = np.full((users.size, k), -1, np.int64)
        if not users.size or k <= 0:
            return out_s, out_i
        sent, self._search = self._search, None
        if sent is None or not np.array_equal(sent[0], users) or sent[2] < k + max(x.size for x in sent[1]):
            sent = self._start_search(users, k)  # not sent ahead, or not deep enough: its own round now
        _, mine, ask, started = sent
        scores, labels = merge_nearest(self.router.finish_search(started), ask)
        if scores is None:
            return out_s, out_i
        for b, ex in enumerate(mine):
            keep = (labels[b] >= 0) & ~np.isin(labels[b], ex)
            s, i = scores[b][keep][:k], labels[b][keep][:k]
            out_s[b, :s.size], out_i[b, :i.size] = s, i
        return out_s, out_i

    def finish(self, cand: np.ndarray, count: np.ndarray) -> RequestGraph:
        """After Stage 1: the view, with every candidate's list when the ranker's pair features read them (the
        filter and the explanations read only the users' and friends' lists), and the candidates' feature
        rows in the same round when the servers serve them."""
        if not self.candidate_lists and not self.features:
            return self.view
        valid = np.arange(cand.shape[1])[None, :] < count[:, None]
        want = np.unique(cand[valid])
        lists = want[~self.view.has_rows(want)] if self.candidate_lists else np.zeros(0, np.int64)
        feats = want[~self.rows.has_features(want)] if self.features else np.zeros(0, np.int64)
        if not lists.size and not feats.size:
            return self.view
        (got, ptr, idx), (fu, feat) = self.router.fetch_rows(lists, feats)
        if self.features:
            self.rows.add(fu, feat=feat)
        if lists.size:
            lost = np.setdiff1d(lists, got, assume_unique=True)  # a shard that did not answer: empty rows, named
            self.view = self.view.with_rows(np.concatenate([got, lost]),
                                            np.concatenate([ptr, np.full(lost.size, ptr[-1])]), idx)
        return self.view


def _local_only(view: RequestGraph, x) -> np.ndarray:
    loc = view.local(np.asarray(x, np.int64).ravel())
    return loc[loc >= 0]
