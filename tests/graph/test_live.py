"""LiveGraph (snapshot + delta) against networkx over random sequences of add / remove / erase / new-user
events: adjacency, degrees, friends-of-friends and mutual counts exact, PPR within its bound, before and
after compaction."""

import networkx as nx
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.candidates.fof import friends_of_friends
from pymk.candidates.ppr import personalized_pagerank
from pymk.graph.live import ADD, REMOVE, LiveGraph
from tests.helpers import graph_from_pairs, reference_fof

N0 = 25

events = st.lists(st.tuples(st.sampled_from(["add", "add", "add", "remove", "erase", "new"]),
                            st.integers(0, N0 + 8), st.integers(0, N0 + 8)), max_size=60)


def _replay(pairs, evs, compact_at=None):
    """Applies `evs` to a LiveGraph and to networkx (external id == dense index of the build's users;
    new users get ids 1000 + k). Returns (live, reference)."""
    live = LiveGraph(graph_from_pairs(pairs, N0), arena=64)  # tiny arena: growth is exercised
    ref = nx.Graph()
    ref.add_nodes_from(range(N0))
    lo, hi = live.snapshot.edge_pairs()
    ref.add_edges_from(zip(lo.tolist(), hi.tolist(), strict=True))
    erased = set()
    for i, (kind, a, b) in enumerate(evs):
        if i == compact_at:
            live.compact()
        n = live.num_users
        if kind == "new":
            u = int(live.add_users([1000 + n])[0])
            assert u == n
            ref.add_node(u)
            continue
        a, b = a % n, b % n
        if kind == "erase":
            live.erase(a)
            if a not in erased:
                ref.remove_edges_from(list(ref.edges(a)))
                erased.add(a)
            continue
        changed = live.apply(ADD if kind == "add" else REMOVE, [a], [b])[0]
        ok = a != b and a not in erased and b not in erased
        if kind == "add":
            assert changed == (ok and not ref.has_edge(a, b))
            if ok:
                ref.add_edge(a, b)
        else:
            assert changed == (ok and ref.has_edge(a, b))
            if changed:
                ref.remove_edge(a, b)
    return live, ref, erased


def _check(live, ref, erased):
    n = live.num_users
    assert n == ref.number_of_nodes()
    assert live.num_edges == ref.number_of_edges()
    for u in range(n):
        assert live.neighbors(u).tolist() == sorted(ref[u]), u
    assert live.degree.tolist() == [ref.degree(u) for u in range(n)]
    assert sorted(np.flatnonzero(live.erased).tolist()) == sorted(erased)
    users = np.arange(n)
    fof = friends_of_friends(live, users, n, score="cn")
    for u in range(n):
        want = reference_fof(ref, u)
        got = {int(c): (int(cn), aa, ra) for c, cn, aa, ra in zip(fof.cand[u, :fof.count[u]], fof.cn[u],
                                                                     fof.aa[u], fof.ra[u], strict=False)}
        assert set(got) == set(want), u
        for c, (cn, aa, ra) in want.items():
            assert got[c][0] == cn and np.isclose(got[c][1], aa) and np.isclose(got[c][2], ra)
    # PPR: forward push leaves |p(v) - ppr(v)| <= eps deg(v); compare against networkx's exact PageRank
    eps, alpha = 1e-6, 0.15
    cand, score, count = personalized_pagerank(live, users, n, alpha=alpha, eps=eps, beta=0.0)
    for u in [x for x in range(n) if ref.degree(x) > 0][:5]:
        exact = nx.pagerank(ref, alpha=1 - alpha, personalization={u: 1.0}, tol=1e-12, max_iter=10_000)
        for c, s in zip(cand[u, :count[u]].tolist(), score[u, :count[u]].tolist(), strict=True):
            assert c not in ref[u] and c != u
            assert abs(s - exact[c]) <= eps * max(ref.degree(c), 1) + 1e-9


@settings(max_examples=40, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, N0 - 1), st.integers(0, N0 - 1)), max_size=60), evs=events,
       compact_at=st.one_of(st.none(), st.integers(0, 59)))
def test_live_graph_matches_networkx(pairs, evs, compact_at):
    live, ref, erased = _replay(pairs, evs, compact_at)
    _check(live, ref, erased)
    live.compact()  # and after folding everything
    _check(live, ref, erased)
    for u in erased:
        assert live.index_of([live.ids[u]])[0] == -1
        assert live.resolve([live.ids[u]], create=True)[0] == -2  # never resurrected


def test_new_user_lookup_and_unknown_ids():
    live = LiveGraph(graph_from_pairs([(0, 1), (1, 2)], 3))
    assert live.index_of([7, 1]).tolist() == [-1, 1]
    u = int(live.add_users([7])[0])
    assert u == 3 and live.index_of([7]).tolist() == [3]
    assert live.add_users([7]).tolist() == [3]  # idempotent
    live.add([3], [1])
    assert live.neighbors(1).tolist() == [0, 2, 3]
    assert live.ids.tolist() == [0, 1, 2, 7]


def test_a_reader_holding_the_old_view_sees_whole_rows():
    live = LiveGraph(graph_from_pairs([(0, 1), (1, 2)], 3), arena=8)
    old = live.kernel_view()
    for v in range(10):
        live.add_users([100 + v])
        live.add([1], [3 + v])
    from pymk.graph import rows as R

    # the old tuple still names valid memory and a whole row of some earlier state (changes made before the
    # arrays it holds were replaced are visible through it, later ones are not)
    seen = R.row(old, 1).tolist()
    assert seen in [[0, 2] + list(range(3, 3 + j)) for j in range(11)] and len(seen) < 12
    assert live.neighbors(1).tolist() == [0, 2] + list(range(3, 13))


def test_compaction_while_changes_keep_arriving_loses_none():
    """Compaction folds a frozen view off the writer's lock and replays what arrived meanwhile: a writer
    thread applying changes during repeated compactions ends in the same graph as applying them alone."""
    import threading

    rng = np.random.default_rng(7)
    pairs = rng.integers(0, 200, (600, 2))
    ops = [(int(k), int(a), int(b)) for k, a, b in zip(rng.choice([ADD, ADD, REMOVE], 3000),
                                                        rng.integers(0, 200, 3000), rng.integers(0, 200, 3000),
                                                        strict=True)]
    erase = [int(x) for x in rng.integers(0, 200, 5)]

    def run(live, compact):
        def writer():
            for i, (k, a, b) in enumerate(ops):
                live.apply(k, [a], [b])
                if i % 600 == 0:
                    live.erase(erase[i // 600])
                    live.add_users([10_000 + i])
        t = threading.Thread(target=writer)
        t.start()
        if compact:  # at least once, however the threads interleave; the result may not depend on it
            live.compact()
        while compact and t.is_alive():
            live.compact()
        t.join()
        return live

    ref = run(LiveGraph(graph_from_pairs(pairs, 200), arena=256), False)
    got = run(LiveGraph(graph_from_pairs(pairs, 200), arena=256), True)
    assert got.compactions > 0
    assert got.num_users == ref.num_users and got.num_edges == ref.num_edges
    for u in range(ref.num_users):
        assert got.neighbors(u).tolist() == ref.neighbors(u).tolist()
    assert got.erased.tolist() == ref.erased.tolist() and got.ids.tolist() == ref.ids.tolist()
