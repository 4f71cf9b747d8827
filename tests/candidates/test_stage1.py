import numpy as np

from pymk.candidates.base import SOURCE_FOF, SOURCE_POPULAR, source_label
from pymk.candidates.stage1 import Stage1
from pymk.config import CandidatesConfig
from tests.helpers import graph_from_pairs


def _graph():
    # hub 9 is friends with 1..8; 0 - 1 only; 10 isolated from everything but 11
    pairs = [(9, i) for i in range(1, 9)] + [(0, 1), (10, 11)]
    return graph_from_pairs(pairs, 12)


def test_fof_then_popular_fill_excludes_self_friends_blocked():
    st1 = Stage1(_graph(), CandidatesConfig(k=6))
    batch = st1.generate([0, 10], blocked=[[2], []])
    row0 = batch.row(0).tolist()
    assert row0[0] == 9 and batch.source[0, 0] == SOURCE_FOF
    assert 0 not in row0 and 1 not in row0 and 2 not in row0 and len(set(row0)) == len(row0) == 6
    assert (batch.source[0, 1:6] == SOURCE_POPULAR).all()
    row10 = batch.row(10 - 9).tolist()
    assert row10[0] == 9  # the most-connected user first
    assert 10 not in row10 and 11 not in row10
    assert batch.features["cn"][0, 0] == 1 and batch.features["cn"][0, 1] == 0


def test_no_fill_when_disabled():
    st1 = Stage1(_graph(), CandidatesConfig(k=6, popular_fill=False))
    batch = st1.generate([0, 10])
    assert batch.count.tolist() == [1, 0]
    assert np.all(batch.cand[1] == -1)


def test_source_label():
    assert source_label(SOURCE_FOF | SOURCE_POPULAR) == "fof+popular"
