"""Pair features for a user and all its Stage-1 candidates, in batch, vectorised (numba for paths).

Columns (`PAIR_FEATURES`), for user u and candidate c:
    cn, aa, ra        common neighbours, Adamic-Adar, Resource Allocation (Stage 1's, 0 past 2 hops)
    jaccard           cn / |N(u) | N(c)|
    paths3            number of 3-edge paths u - a - b - c (reach past two hops; 0 for far users)
    ppr               personalized-PageRank score of c from u (0 where PPR did not reach c)
    ridge             ridge regression of u's friend list over its candidate subgraph (`ridge.py`: EASE
                      on u, its friends and its candidates)
    aa_rel, ra_rel, ppr_rel   the score over the user's best candidate's (comparable across users)
    aa_rank, ppr_rank, paths3_rank   the candidate's rank by that score in the user's list, over the
                      list length (0 = best; ties share the better rank)
    deg_u, deg_c      degrees (log(1 + degree))
    src_fof, src_ppr, src_emb, src_pop     which Stage-1 sources found c
    stage1_pos        c's position in the Stage-1 list / list length (sources' own order)
    emb_dot, emb_cos  GNN embedding inner product and cosine (NaN without embeddings)
    age_u, age_c      time since the user's first friendship, recency_c time since c's last one,
                      in units of the graph's time span (NaN without timestamps)
User columns come from a feature store (`pymk.features.store`) in one fetch for u and its candidates;
missing users (NaN rows) leave their columns NaN and mark the row degraded.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from pymk.candidates.base import SOURCE_EMBEDDING, SOURCE_FOF, SOURCE_POPULAR, SOURCE_PPR, CandidateBatch
from pymk.features.ridge import subgraph_ridge
from pymk.graph import rows as R
from pymk.workspace import thread_scratch

PAIR_FEATURES = ("cn", "aa", "ra", "jaccard", "paths3", "ppr", "ridge", "aa_rel", "ra_rel", "ppr_rel", "aa_rank",
                 "ppr_rank", "paths3_rank", "deg_u", "deg_c", "src_fof", "src_ppr", "src_emb", "src_pop", "stage1_pos",
                 "emb_dot", "emb_cos", "age_u", "age_c", "recency_c")
EMBEDDING_FEATURES = ("emb_dot", "emb_cos")
GRAPH_FEATURES = ("cn", "aa", "ra", "jaccard", "paths3", "ppr", "ridge")


@njit(cache=True)
def _paths3_user(g, u, cand_row, count, out_row, acc, touched):
    """out_row[j] = sum over b in N(cand_row[j]) of |N(u) & N(b)|: the 3-edge paths u - a - b - c.
    acc (n,) float is zero on entry and left zero; touched (n,) int64 scratch."""
    nt = 0
    fu = R.row(g, u)
    for i in range(fu.shape[0]):
        fa = R.row(g, fu[i])
        for j in range(fa.shape[0]):
            x = fa[j]
            if acc[x] == 0.0:
                touched[nt] = x
                nt += 1
            acc[x] += 1.0
    for j in range(count):
        c = cand_row[j]
        s = 0.0
        fc = R.row(g, c)
        for i in range(fc.shape[0]):
            s += acc[fc[i]]
        out_row[j] = s
    for t in range(nt):
        acc[touched[t]] = 0.0


@njit(cache=True, nogil=True)  # serving threads run it side by side
def _paths3_serial(g, users, cand, count, out, acc, touched):
    for b in range(users.shape[0]):
        if users[b] >= 0:
            _paths3_user(g, users[b], cand[b], count[b], out[b], acc, touched)


@njit(parallel=True, cache=True)
def _paths3_parallel(g, users, cand, count, out):
    n = R.nusers(g)
    nb = users.shape[0]
    n_chunks = min(nb, 64)
    for ch in prange(n_chunks):  # one O(n) workspace per chunk of users
        acc = np.zeros(n, np.float32)
        touched = np.empty(n, np.int64)
        for b in range(ch, nb, n_chunks):
            if users[b] >= 0:
                _paths3_user(g, users[b], cand[b], count[b], out[b], acc, touched)


def _workspace(n: int) -> tuple[np.ndarray, np.ndarray]:
    """This thread's (acc (n,) float32, touched (n,) int64); float32 keeps acc small enough for the cache
    (path counts through one user are far below 2**24, so exact)."""
    return thread_scratch("paths3", n, lambda n: (np.zeros(n, np.float32), np.empty(n, np.int64)))


def paths3(graph, users: np.ndarray, cand: np.ndarray, count: np.ndarray) -> np.ndarray:
    """3-edge path counts u - a - b - c for every (user, candidate) slot. Shapes: (B,), (B, C), (B,) -> (B, C).

    A few users (the serving path) run on this thread's reused workspace: allocating and zeroing an
    O(users) accumulator per request would cost more than the walk on a large graph."""
    from pymk.candidates.fof import SERIAL_BATCH

    out = np.zeros(cand.shape, np.float64)
    args = (R.view(graph), users.astype(np.int64), cand.astype(np.int64), count.astype(np.int64), out)
    if users.shape[0] <= SERIAL_BATCH:
        _paths3_serial(*args, *_workspace(R.capacity(graph)))
    else:
        _paths3_parallel(*args)
    return out


def pair_features(batch: CandidateBatch, graph, store) -> tuple[np.ndarray, np.ndarray]:
    """Features of every (user, candidate) slot of a Stage-1 batch.

    Args:
        batch: Stage-1 output (features cn / aa / ra, and ppr when that source ran).
        graph: the CSR graph the candidates were made on (paths3, ridge).
        store: a feature store (`fetch(users) -> (m, F)`), whose trailing `emb_dim` columns are embeddings.
    Returns:
        X (B, C, len(PAIR_FEATURES)) float32 (padding slots hold zeros), degraded (B,) bool: the user or
        one of its candidates had no stored features (NaN columns).
    """
    users, cand, count = batch.users, batch.cand, batch.count
    B, C = cand.shape
    X = np.zeros((B, C, len(PAIR_FEATURES)), np.float32)
    valid = batch.valid
    col = {name: i for i, name in enumerate(PAIR_FEATURES)}
    if C == 0:
        return X, np.zeros(B, bool)
    all_users = np.concatenate([users, np.where(valid, cand, -1).ravel()])
    if getattr(batch, "rows", None) is not None and batch.rows.width:  # the tier read them with the batch
        store = batch.rows
    rows = store.fetch(all_users)  # one round trip
    uf, cf = rows[:B], rows[B:].reshape(B, C, -1)
    missing = np.isnan(uf[:, :2]).any(1) | (np.isnan(cf[:, :, :2]).any(2) & valid).any(1)  # no stored row
    # degrees come from the graph as it is now (new users, friendships since the build): computed on demand
    view = batch.view  # the ranking tier: the lists it read for this batch, on local indices
    if view is not None:
        live = view.degree_of(all_users).astype(np.float32)
        span_of, graph = graph, view.csr
        users, cand = view.local(users), np.where(valid, view.local(cand), -1)
    else:
        deg = np.asarray(graph.degree)
        live = np.where(all_users >= 0, deg[np.maximum(all_users, 0)], 0).astype(np.float32)
        span_of = graph
    uf[:, 0], uf[:, 1] = live[:B], np.log1p(live[:B])
    cf[:, :, 0], cf[:, :, 1] = live[B:].reshape(B, C), np.log1p(live[B:].reshape(B, C))
    deg_u, deg_c = uf[:, 0][:, None], cf[:, :, 0]
    cn = batch.features["cn"].astype(np.float32)
    X[:, :, col["cn"]] = cn
    X[:, :, col["aa"]] = batch.features["aa"]
    X[:, :, col["ra"]] = batch.features["ra"]
    with np.errstate(invalid="ignore", divide="ignore"):
        X[:, :, col["jaccard"]] = np.where(cn > 0, cn / (deg_u + deg_c - cn), 0.0)
    X[:, :, col["paths3"]] = np.log1p(paths3(graph, users, cand, count))
    X[:, :, col["ridge"]] = subgraph_ridge(graph, users, cand, count)
    if "ppr" in batch.features:
        X[:, :, col["ppr"]] = batch.features["ppr"]
    n_valid = np.maximum(count, 1)[:, None].astype(np.float32)
    for rel, base in (("aa_rel", "aa"), ("ra_rel", "ra"), ("ppr_rel", "ppr")):
        v = np.where(valid, X[:, :, col[base]], 0.0)
        X[:, :, col[rel]] = v / np.maximum(v.max(axis=1, keepdims=True), 1e-12)
    for rank, base in (("aa_rank", "aa"), ("ppr_rank", "ppr"), ("paths3_rank", "paths3")):
        v = np.where(valid, X[:, :, col[base]], -np.inf)
        srt = -np.sort(-v, axis=1)  # descending per row
        # rank = how many candidates of the row score strictly higher
        r = np.stack([np.searchsorted(-srt[i], -v[i], side="left") for i in range(B)]) if B else v
        X[:, :, col[rank]] = r / n_valid
    X[:, :, col["deg_u"]] = uf[:, 1][:, None]
    X[:, :, col["deg_c"]] = cf[:, :, 1]
    for name, bit in (("src_fof", SOURCE_FOF), ("src_ppr", SOURCE_PPR), ("src_emb", SOURCE_EMBEDDING),
                      ("src_pop", SOURCE_POPULAR)):
        X[:, :, col[name]] = (batch.source & bit) > 0
    X[:, :, col["stage1_pos"]] = np.arange(C)[None, :] / np.maximum(count, 1)[:, None]
    emb_dim = getattr(store, "emb_dim", 0)
    if emb_dim:
        eu, ec = uf[:, -emb_dim:], cf[:, :, -emb_dim:]
        dot = np.einsum("bd,bcd->bc", eu, ec)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = dot / (np.linalg.norm(eu, axis=1)[:, None] * np.linalg.norm(ec, axis=2))
        X[:, :, col["emb_dot"]] = dot
        X[:, :, col["emb_cos"]] = cos
    else:
        X[:, :, col["emb_dot"]] = np.nan
        X[:, :, col["emb_cos"]] = np.nan
    first_u, first_c, last_c = uf[:, 2][:, None], cf[:, :, 2], cf[:, :, 3]
    t_lo, t_hi = _time_span(span_of)
    span = max(t_hi - t_lo, 1.0)
    X[:, :, col["age_u"]] = (t_hi - first_u) / span
    X[:, :, col["age_c"]] = (t_hi - first_c) / span
    X[:, :, col["recency_c"]] = (t_hi - last_c) / span
    X[~valid] = 0.0
    return X, missing


def _time_span(graph) -> tuple[float, float]:
    cached = getattr(graph, "_pymk_time_span", None) or getattr(graph, "time_span", None)
    if cached is not None:
        return cached
    if graph.ts is None or len(graph.ts) == 0:
        span = (np.nan, np.nan)
    else:
        ts = np.asarray(graph.ts)
        span = (float(ts.min()), float(ts.max()))
    try:
        graph._pymk_time_span = span
    except AttributeError:
        pass
    return span
