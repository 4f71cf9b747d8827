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


def test_embedding_source_merges_within_its_share():
    from pymk.candidates.base import SOURCE_EMBEDDING

    g = _graph()
    emb = np.zeros((12, 2), np.float32)
    emb[:, 0] = np.arange(12)  # inner product with user 0's vector: larger index, larger score
    emb[0] = [1.0, 0.0]
    st1 = Stage1(g, CandidatesConfig(k=6, embedding_share=0.5, popular_fill=False), embeddings=emb)
    batch = st1.generate([0], blocked=[[11]])
    row = batch.row(0).tolist()
    # friends-of-friends first (9), then embedding neighbours by score: 11 is blocked, 1 is a friend
    assert row == [9, 10, 8, 7, 6, 5]
    assert batch.source[0, 0] == SOURCE_FOF | SOURCE_EMBEDDING  # 9 is found by both sources
    assert (batch.source[0, 1:6] == SOURCE_EMBEDDING).all()
    assert batch.features["aa"][0, 1] == 0 and batch.features["cn"][0, 0] == 1


def test_embedding_share_caps_embedding_slots_when_fof_is_rich():
    rng = np.random.default_rng(0)
    g = graph_from_pairs(rng.integers(0, 60, (900, 2)), 60)
    emb = rng.normal(size=(60, 8)).astype(np.float32)
    st1 = Stage1(g, CandidatesConfig(k=20, embedding_share=0.25, popular_fill=False), embeddings=emb)
    batch = st1.generate(np.arange(60))
    for b in range(60):
        only_emb = (batch.source[b, : batch.count[b]] == 4).sum()
        fof_n = (batch.source[b, : batch.count[b]] & 1).sum()
        assert only_emb <= 5 or fof_n == np.count_nonzero(Stage1(g, CandidatesConfig(
            k=20, embedding_share=0.0, popular_fill=False)).generate([b]).cand[0] >= 0)
        row = batch.row(b)
        assert len(set(row.tolist())) == row.size and b not in row
        assert not set(row.tolist()) & set(g.neighbors(b).tolist())
