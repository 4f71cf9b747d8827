"""Which score Stage 1 keeps its friends-of-friends by (`candidates.fof.score = "auto"`), chosen per graph.

On graphs with hubs a user's 2-hop set runs to thousands and Stage 1 keeps only its top k: the order
decides the recall. Adamic-Adar (1 / log deg of the middle user) lets paths through hubs count almost
as much as any other, Resource Allocation (1 / deg) nearly discounts them, common neighbours not at all.
Which is best depends on the graph (measured under the shared protocol, docs/RESULTS.md: RA keeps 5
points more than AA on a graph with hubs of 4,000 friends, AA 0.2 more on one without), so the build
measures it, never on the protocol's test edges: on the ranker's first internal split (G' = the graph
less a held-out share of its friendships), Stage 1 as configured is run for up to `EVAL_USERS` users
with held-out friends, once per order, and the order whose top k holds the most held-out friends is
kept; Adamic-Adar unless another beats it by more than `MARGIN` (the spread between seeds of the split).
"""

from __future__ import annotations

import copy
import time

import numpy as np

ORDERS = ("aa", "ra", "cn")  # Adamic-Adar first: kept on ties
EVAL_USERS = 2000
MARGIN = 0.003


def choose_fof_order(graph, config, *, log=print) -> tuple[str, dict]:
    """The friends-of-friends order Stage 1 should use on `graph`, measured on an internal split.

    Args:
        graph: the build's graph (a `CSRGraph`).
        config: the build's `PymkConfig` (its candidates and ranker split settings are read, not changed).
    Returns:
        (order, summary): one of ORDERS, and {"recall@k": {order: held-out recall}, "users", "k", "seconds"}.
    """
    from pymk.candidates.stage1 import Stage1
    from pymk.ranking.learned import internal_graph

    t = time.perf_counter()
    sub, ha, hb = internal_graph(graph, config, 0)
    src = np.concatenate([ha, hb]).astype(np.int64)
    dst = np.concatenate([hb, ha]).astype(np.int64)
    users = np.unique(src)
    if users.size > EVAL_USERS:
        rng = np.random.default_rng(config.ranker.seed)
        users = np.sort(rng.choice(users, EVAL_USERS, replace=False))
    keep = np.isin(src, users)
    n = np.int64(max(graph.num_users, 1))
    truth = np.unique(src[keep] * n + dst[keep])
    k = config.candidates.k
    recall = {}
    for order in ORDERS:
        cc = copy.deepcopy(config.candidates)
        cc.fof.score = order
        cand = Stage1(sub, cc).generate(users, k=k).cand
        hits = np.isin(users[:, None] * n + cand, truth) & (cand >= 0)
        recall[order] = round(float(hits.sum() / max(1, truth.size)), 4)
    best = max(ORDERS, key=lambda o: recall[o])
    chosen = best if recall[best] > recall["aa"] + MARGIN else "aa"
    summary = {"chosen": chosen, f"recall@{k}": recall, "users": int(users.size), "k": int(k),
               "seconds": round(time.perf_counter() - t, 3)}
    log(f"stage stage1: friends-of-friends by {chosen} (held-out recall@{k} on the internal split: "
        + ", ".join(f"{o} {recall[o]:.4f}" for o in ORDERS) + f"; {summary['seconds']:.1f}s)")
    return chosen, summary
