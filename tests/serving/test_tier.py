"""The stateless ranking tier (in process; the Ray deployment is in test_shard_servers.py): a model opened with
`tier=True` maps no adjacency, reads every list from its shard servers per request, and answers like the
model that holds the whole graph: friends-of-friends, pair features, filters and explanations exactly; PPR
within its approximation bound of the exact personalized PageRank; and it follows live changes."""

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.candidates.fof import friends_of_friends
from pymk.config import PymkConfig
from pymk.features.pairs import PAIR_FEATURES, pair_features
from pymk.features.store import InProcessFeatureStore
from pymk.graph.edges import EdgeList
from pymk.graph.partition import partition, plan_replicas
from pymk.graph.request_graph import RequestGraph
from pymk.graph.snapshot import CSRGraph
from pymk.pipeline.build import build_from_edges
from pymk.pipeline.model import Model
from pymk.serving import batch
from pymk.serving.shard_router import in_process_servers
from pymk.serving.tier import TierReads, distributed_ppr, two_hop_graph
from pymk.stream.log import EdgeEvent

USERS = 600


def _edges(n, m, seed, ts=False):
    g = nx.gnm_random_graph(n, m, seed=seed)
    e = np.array(sorted(g.edges()), np.int64).reshape(-1, 2)
    lo, hi = e.min(1), e.max(1)
    return EdgeList(np.arange(n, dtype=np.int64), lo.astype(np.int32), hi.astype(np.int32),
                    np.arange(lo.size, dtype=np.int64) if ts else None)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from pymk.graph.synth import SynthConfig, generate

    src, dst, _ = generate(SynthConfig(USERS, 8, seed=3))
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    keys = np.unique(lo * np.int64(USERS) + hi)
    keys = keys[keys // USERS != keys % USERS]
    cfg = PymkConfig()
    cfg.sharding.shards = 3
    cfg.sharding.method = "hash"
    cfg.ranker.kind = "adamic_adar"
    cfg.gnn.enabled = False
    cfg.candidates.ppr.enabled = False  # PPR's push order differs by design: compared on its own below
    edges = EdgeList(np.arange(USERS, dtype=np.int64), (keys // USERS).astype(np.int32),
                     (keys % USERS).astype(np.int32), np.arange(keys.size, dtype=np.int64))
    return build_from_edges(edges, tmp_path_factory.mktemp("tier") / "m", cfg, log=lambda s: None)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 60), density=st.floats(0.02, 0.3), seed=st.integers(0, 10_000), take=st.floats(0.1, 1.0))
def test_request_graph_reads_the_fetched_lists_and_runs_the_kernels_unchanged(n, density, seed, take):
    """Any subset of rows: their lists read back in global ids, ids round-trip, and friends-of-friends over the
    users' and friends' rows equals the whole graph's (same candidates, order, counts and scores)."""
    g = CSRGraph.from_edges(_edges(n, int(density * n * (n - 1) / 2), seed))
    rng = np.random.default_rng(seed)
    users = rng.choice(n, max(1, int(take * n)), replace=False)
    friends = np.unique(np.concatenate([g.indices[g.indptr[u]:g.indptr[u + 1]] for u in users]))
    rows = np.union1d(users, friends)
    ptr = np.concatenate([[0], np.cumsum(np.diff(g.indptr)[rows])])
    idx = np.concatenate([g.indices[g.indptr[u]:g.indptr[u + 1]] for u in rows] + [np.zeros(0, np.int32)])
    order = rng.permutation(rows.size)  # rows may arrive in any order
    rg = RequestGraph(rows[order], *_reorder(ptr, idx, order))
    p, i = rg.global_lists(rows)
    for j, u in enumerate(rows):
        assert list(i[p[j]:p[j + 1]]) == sorted(g.indices[g.indptr[u]:g.indptr[u + 1]].tolist())
    assert np.array_equal(rg.glob(rg.local(rows)), rows)
    assert (rg.local(np.array([n + 5])) == -1).all()
    want = friends_of_friends(g, users, 10)
    got = friends_of_friends(rg.csr, rg.local(users), 10)
    w = got.cand.shape[1]  # k is capped at the users a graph has: the request graph may name fewer
    assert (want.cand[:, w:] == -1).all()
    assert np.array_equal(rg.glob(got.cand), want.cand[:, :w])
    for f in ("cn", "aa", "ra"):
        assert np.array_equal(getattr(got, f), getattr(want, f)[:, :w]), f
    assert np.array_equal(got.count, want.count)


def _reorder(ptr, idx, order):
    lens = np.diff(ptr)[order]
    parts = [idx[ptr[r]:ptr[r + 1]] for r in order]
    return np.concatenate([[0], np.cumsum(lens)]), np.concatenate(parts + [np.zeros(0, idx.dtype)])


@pytest.mark.parametrize("shards", [1, 3])
def test_distributed_ppr_stays_within_the_push_bound_of_exact_pagerank(shards):
    """Forward push by the shard servers, one hop a round: every estimate p(v) is within eps * deg(v) of the
    exact personalized PageRank (networkx), for every user v that is not the source or its friend."""
    n = 120
    edges = _edges(n, 420, seed=11)
    g = CSRGraph.from_edges(edges)
    plan = plan_replicas(g, partition(g, shards, "hash"), shards, "hash", budget=0.1)
    router = in_process_servers(None, g, plan)
    nxg = nx.Graph(list(zip(edges.lo.tolist(), edges.hi.tolist(), strict=True)))
    nxg.add_nodes_from(range(n))
    alpha, eps = 0.15, 1e-4
    users = np.array([0, 7, 42], np.int64)
    view = two_hop_graph(router, users)
    cand, score = distributed_ppr(router, users, n, alpha=alpha, eps=eps, beta=0.0, view=view)
    deg = np.diff(g.indptr)
    for b, u in enumerate(users.tolist()):
        exact = nx.pagerank(nxg, alpha=1 - alpha, personalization={int(u): 1.0}, tol=1e-12, max_iter=10_000)
        got = dict(zip(cand[b][cand[b] >= 0].tolist(), score[b][cand[b] >= 0].tolist(), strict=True))
        excluded = {u, *g.indices[g.indptr[u]:g.indptr[u + 1]].tolist()}
        for v in range(n):
            if v in excluded:
                assert v not in got
                continue
            assert abs(got.get(v, 0.0) - exact[v]) <= eps * max(deg[v], 1) + 1e-9, (u, v)


def test_the_tier_maps_no_adjacency_and_answers_like_the_whole_graph(model_dir):
    """Stage 1 (friends-of-friends and the popularity fill), the pair features, the filter and the
    explanations of the tier equal the whole-graph model's for every user."""
    ref = Model.load(model_dir)
    tier = Model.load(model_dir, tier=True)
    assert tier.tier and not hasattr(tier.graph, "indices") and not hasattr(tier.graph, "kernel_view")
    users = np.arange(USERS)
    a, b = batch.recommend(ref, users, 30), batch.recommend(tier, users, 30)
    for f in ("cand", "score", "mutual", "count", "source", "sample"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    ca = ref.candidates(users[:80], k=200)
    cb = tier.stage1.generate(users[:80], k=200, reads=TierReads(tier.servers, users[:80], candidate_lists=True))
    assert cb.view is not None and np.array_equal(ca.cand, cb.cand)
    store = InProcessFeatureStore.of_graph(ref.snapshot)
    xa, ma = pair_features(ca, ref.graph, store)
    xb, mb = pair_features(cb, tier.graph, store)
    assert np.array_equal(ma, mb)
    for j, name in enumerate(PAIR_FEATURES):
        assert np.allclose(xa[:, :, j], xb[:, :, j], equal_nan=True, rtol=1e-6, atol=1e-6), name


def test_changes_through_the_tier_reach_its_shard_servers(model_dir):
    """New users, friendships added and removed, an erasure: applied through the tier (its servers) and to the
    whole-graph model, they leave the same lists, ids and answers."""
    ref = Model.load(model_dir)
    tier = Model.load(model_dir, tier=True)
    rng = np.random.default_rng(5)
    events = []
    for i in range(300):
        a, b = (int(x) for x in rng.integers(0, USERS, 2))
        r = rng.random()
        if r < 0.1:
            b = 90_000 + int(rng.integers(0, 15))
        events.append(EdgeEvent(a, b, 10_000.0 + i, "remove" if 0.1 <= r < 0.35 else "add"))
    events += [EdgeEvent(17, 17, 20_000.0, "erase"), EdgeEvent(17, 3, 20_001.0, "add")]
    c_ref, c_tier = ref.apply(events), tier.apply(events)
    assert (c_ref.added, c_ref.removed, c_ref.ignored) == (c_tier.added, c_tier.removed, c_tier.ignored)
    assert c_ref.new_users == c_tier.new_users and c_ref.erased == c_tier.erased
    n = ref.graph.num_users
    assert np.array_equal(ref.graph.ids, tier.graph.ids) and tier.graph.num_edges == ref.graph.num_edges
    ptr, idx = tier.graph.rows(np.arange(n))
    want_ptr, want_idx = ref.graph.rows(np.arange(n))
    assert np.array_equal(ptr, want_ptr) and np.array_equal(idx, want_idx)
    users = np.arange(n)
    a, b = batch.recommend(ref, users, 20), batch.recommend(tier, users, 20)
    for f in ("cand", "mutual", "count", "sample"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert tier.index_of([17])[0] == -1


def test_a_bounded_number_of_push_rounds_bounds_the_error_by_the_mass_left():
    """With `rounds` calls at most, every estimate stays below the exact PageRank (mass only moves forward) and
    the total shortfall is at most the mass the tier stopped with plus what lay below the threshold."""
    n = 150
    edges = _edges(n, 500, seed=4)
    g = CSRGraph.from_edges(edges)
    plan = plan_replicas(g, partition(g, 4, "hash"), 4, "hash", budget=0.0)
    router = in_process_servers(None, g, plan)
    nxg = nx.Graph(list(zip(edges.lo.tolist(), edges.hi.tolist(), strict=True)))
    nxg.add_nodes_from(range(n))
    alpha, eps, u = 0.15, 1e-4, 9
    view = two_hop_graph(router, np.array([u]))
    exact = nx.pagerank(nxg, alpha=1 - alpha, personalization={u: 1.0}, tol=1e-12, max_iter=10_000)
    excluded = {u, *g.indices[g.indptr[u]:g.indptr[u + 1]].tolist()}
    shortfall = {}
    for rounds in (1, 2, 0):
        left0 = router.stats.ppr_left
        cand, score = distributed_ppr(router, np.array([u]), n, alpha=alpha, eps=eps, beta=0.0, view=view,
                                      rounds=rounds)
        got = dict(zip(cand[0][cand[0] >= 0].tolist(), score[0][cand[0] >= 0].tolist(), strict=True))
        left = router.stats.ppr_left - left0
        assert all(got.get(v, 0.0) <= exact[v] + 1e-9 for v in range(n))
        shortfall[rounds] = sum(exact[v] - got.get(v, 0.0) for v in range(n) if v not in excluded)
        assert shortfall[rounds] <= left + eps * g.indices.shape[0] + 1e-9, rounds
    assert shortfall[1] > shortfall[2] > shortfall[0]  # each round pushes more of the walk


def test_the_service_setting_bounds_the_tiers_push_rounds(model_dir):
    """`PYMK_PPR_ROUNDS` overrides the model's `candidates.ppr.rounds`: each request then makes at most that many
    rounds of push calls (counted by the router), and the answer still comes back whole."""
    from pymk.serving.service import Service
    from pymk.serving.settings import ServeSettings

    for rounds in (1, 3):
        svc = Service.from_settings(ServeSettings(model=str(model_dir), tier=True, ppr_rounds=rounds, stream=False,
                                                  cache_size=0))
        try:
            assert svc.model.tier and svc.model.config.candidates.ppr.rounds == rounds
            svc.model.config.candidates.ppr.enabled = True  # the fixture's model was built without it
            stats = svc.model.servers.stats
            for u in range(0, USERS, 37):
                before = stats.ppr_rounds
                req = svc.recommend(int(svc.model.graph.ids[u]), 10)
                assert stats.ppr_rounds - before <= rounds and len(req.response) == 10
            assert stats.ppr_rounds > 0
        finally:
            svc.close()


def test_a_negative_round_bound_is_refused_where_it_is_set():
    """`candidates.ppr.rounds` and `PYMK_PPR_ROUNDS` below 0 are refused with the field named."""
    from pydantic import ValidationError

    from pymk.config import ConfigError
    from pymk.serving.settings import ServeSettings

    cfg = PymkConfig()
    cfg.candidates.ppr.rounds = -1
    with pytest.raises(ConfigError, match="candidates.ppr.rounds"):
        cfg.validate()
    with pytest.raises(ValidationError, match="ppr_rounds"):
        ServeSettings(ppr_rounds=-1)
