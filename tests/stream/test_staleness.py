import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.stream.staleness import StalenessTracker


def test_staleness_is_new_neighbours_in_the_window_over_degree():
    deg = np.array([20, 10, 100, 1, 0])
    t = StalenessTracker(deg, window_s=100, threshold=0.05)
    t.record([0, 0], [1, 2], [10, 20])
    np.testing.assert_allclose(t.staleness(), [2 / 20, 1 / 10, 1 / 100, 0, 0])
    assert t.due().tolist() == [0, 1]  # 0.10 and 0.10 > 0.05; user 2 at 0.01 is not due
    t.advance(115)  # the event at 10 leaves the window
    np.testing.assert_allclose(t.staleness(), [1 / 20, 0, 1 / 100, 0, 0])
    assert t.due().tolist() == []
    t.record([3], [4], 116)
    assert t.due().tolist() == [3, 4]  # degree 0 counts as 1
    t.mark_refreshed([3])
    assert t.due().tolist() == [4]
    t.advance(1000)  # every event expires; the refreshed user does not go negative
    assert t.counts.tolist() == [0, 0, 0, 0, 0]
    with pytest.raises(ValueError):
        StalenessTracker(deg, window_s=0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 300), st.booleans()), max_size=40),
       st.integers(1, 200))
def test_counts_match_a_brute_force_replay(events, window):
    """Events arrive in time order, some followed by a refresh of their first user."""
    events = sorted(events, key=lambda e: e[2])
    t = StalenessTracker(np.ones(6, np.int64), window_s=window)
    log, refreshed = [], {}
    for i, (a, b, ts, refresh) in enumerate(events):
        t.record([a], [b], [ts])
        log += [(a, ts, i), (b, ts, i)]
        if refresh:
            t.mark_refreshed([a])
            refreshed[a] = i + 1  # events numbered below this are cleared for a
        now = t.now
        expect = [sum(1 for u, s, k in log if u == v and s >= now - window and k >= refreshed.get(v, 0))
                  for v in range(6)]
        assert t.counts.tolist() == expect
