import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.candidates.fof import friends_of_friends, two_hop_coverage
from tests.helpers import graph_from_pairs, nx_graph, reference_fof

graphs = st.integers(3, 25).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), min_size=1, max_size=90)))


def _expected_order(ref: dict, score_pos: int, k: int) -> list[int]:
    return [c for c, _ in sorted(ref.items(), key=lambda kv: (-kv[1][score_pos], kv[0]))][:k]


@settings(max_examples=60, deadline=None)
@given(graphs, st.sampled_from(["cn", "aa", "ra"]), st.integers(1, 30), st.data())
def test_matches_networkx_brute_force(case, score, k, data):
    n, pairs = case
    g = graph_from_pairs(pairs, n)
    ref_g = nx_graph(g)
    users = np.arange(n)
    blocked = [data.draw(st.lists(st.integers(0, n - 1), max_size=3)) for _ in range(n)]
    for with_blocked in (False, True):
        res = friends_of_friends(g, users, k, score=score, blocked=blocked if with_blocked else None)
        for u in range(n):
            ref = reference_fof(ref_g, u, blocked[u] if with_blocked else ())
            got = res.cand[u, : res.count[u]].tolist()
            assert res.count[u] == min(k, len(ref))
            assert set(got) <= set(ref)
            for j, c in enumerate(got):
                cn, aa, ra = ref[c]
                assert res.cn[u, j] == cn
                assert res.aa[u, j] == pytest.approx(aa, rel=1e-12)
                assert res.ra[u, j] == pytest.approx(ra, rel=1e-12)
            # order: by score descending, ties by smaller index (compare scores, exact ties are rare
            # to break differently only through float summation order, so compare the score sequence)
            pos = {"cn": 0, "aa": 1, "ra": 2}[score]
            exp = _expected_order(ref, pos, k)
            assert [round(ref[c][pos], 9) for c in got] == [round(ref[c][pos], 9) for c in exp]
            if score == "cn":
                assert got == exp
            assert u not in got and not set(got) & set(ref_g[u])
            assert (res.cand[u, res.count[u]:] == -1).all() and res.cand.shape[1] == min(k, n)


def test_known_small_graph():
    #   0 - 1 - 2,  0 - 3 - 2,  3 - 4,  5 isolated
    g = graph_from_pairs([(0, 1), (1, 2), (0, 3), (3, 2), (3, 4)], 6)
    res = friends_of_friends(g, [0, 5, -1], 5, score="aa")
    assert res.cand[0, :2].tolist() == [2, 4]
    assert res.cn[0, :2].tolist() == [2, 1]
    assert res.aa[0, 0] == pytest.approx(1 / np.log(2) + 1 / np.log(3))
    assert res.ra[0, 1] == pytest.approx(1 / 3)
    assert res.count.tolist() == [2, 0, 0]


def test_max_expand_keeps_lowest_degree_friends():
    # user 0 has friends 1 (degree 2) and 2 (degree 4); with max_expand=1 only 1 is expanded
    g = graph_from_pairs([(0, 1), (1, 3), (0, 2), (2, 4), (2, 5), (2, 6)], 7)
    full = friends_of_friends(g, [0], 10)
    capped = friends_of_friends(g, [0], 10, max_expand=1)
    assert set(full.cand[0, : full.count[0]].tolist()) == {3, 4, 5, 6}
    assert capped.cand[0, : capped.count[0]].tolist() == [3]


def test_two_hop_coverage():
    g = graph_from_pairs([(0, 1), (1, 2), (2, 3)], 5)
    hits, sizes = two_hop_coverage(g, [0, 1], [0, 2, 3], [2, 3, 3])
    assert hits.tolist() == [1, 1] and sizes.tolist() == [1, 1]


def test_bad_arguments():
    g = graph_from_pairs([(0, 1)], 2)
    with pytest.raises(ValueError, match="unknown score"):
        friends_of_friends(g, [0], 3, score="pagerank")
    with pytest.raises(IndexError):
        friends_of_friends(g, [7], 3)


def test_single_user_calls_reuse_workspace_and_match_batch():
    rng = np.random.default_rng(3)
    g = graph_from_pairs(rng.integers(0, 300, (2000, 2)), 300)
    batch = friends_of_friends(g, np.arange(300), 25, score="ra")
    for u in list(range(300)) + [0, 1]:  # serial path, same thread workspace over and over
        blocked = [[int(batch.cand[u, 0])]] if batch.count[u] else None
        one = friends_of_friends(g, [u], 25, score="ra")
        assert one.cand[0].tolist() == batch.cand[u].tolist()
        assert np.array_equal(one.ra[0], batch.ra[u])
        if blocked:  # a blocked candidate disappears and the rest move up
            b = friends_of_friends(g, [u], 25, score="ra", blocked=blocked)
            assert b.cand[0, : b.count[0]].tolist() == [c for c in batch.cand[u, 1: batch.count[u]]] + \
                b.cand[0, batch.count[u] - 1: b.count[0]].tolist()


def test_within_two_hops():
    from pymk.candidates.fof import within_two_hops

    g = graph_from_pairs([(0, 1), (1, 2), (2, 3)], 5)
    assert within_two_hops(g, [0, 0, 1, 4], [2, 3, 3, 0]).tolist() == [True, False, True, False]
