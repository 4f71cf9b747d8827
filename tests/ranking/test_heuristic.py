import numpy as np
import pytest

from pymk.candidates.base import CandidateBatch
from pymk.ranking import make_ranker


def _batch():
    cand = np.array([[5, 3, 8, -1], [2, -1, -1, -1]])
    aa = np.array([[0.5, 1.5, 0.5, 0], [0.2, 0, 0, 0]])
    cn = np.array([[1, 3, 2, 0], [1, 0, 0, 0]], np.int32)
    return CandidateBatch(np.array([0, 1]), cand, np.array([3, 1]), np.ones_like(cand, np.uint8),
                          {"aa": aa, "cn": cn, "ra": aa})


def test_rank_by_score_ties_keep_stage1_order():
    r = make_ranker("adamic_adar").rank(_batch(), 2)
    assert r.cand.tolist() == [[3, 5], [2, -1]]
    assert r.mutual.tolist() == [[3, 1], [1, 0]]
    assert r.count.tolist() == [2, 1]
    r = make_ranker("common_neighbors").rank(_batch(), 4)
    assert r.cand[0].tolist() == [3, 8, 5, -1]


def test_unknown_ranker_and_bad_k():
    with pytest.raises(ValueError, match="unknown ranker"):
        make_ranker("gbdt")
    with pytest.raises(ValueError, match="k must be"):
        make_ranker("adamic_adar").rank(_batch(), 0)
