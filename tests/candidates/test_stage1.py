import numpy as np

from pymk.candidates.base import SOURCE_FOF, SOURCE_POPULAR, source_label
from pymk.candidates.stage1 import Stage1
from pymk.config import CandidatesConfig, PprConfig
from tests.helpers import graph_from_pairs

NO_PPR = PprConfig(enabled=False)


def _graph():
    # hub 9 is friends with 1..8; 0 - 1 only; 10 isolated from everything but 11
    pairs = [(9, i) for i in range(1, 9)] + [(0, 1), (10, 11)]
    return graph_from_pairs(pairs, 12)


def test_fof_then_popular_fill_excludes_self_friends_blocked():
    st1 = Stage1(_graph(), CandidatesConfig(ppr=NO_PPR, k=6))
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
    st1 = Stage1(_graph(), CandidatesConfig(ppr=NO_PPR, k=6, popular_fill=False))
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
    st1 = Stage1(g, CandidatesConfig(ppr=NO_PPR, k=6, embedding_share=0.5, popular_fill=False), embeddings=emb)
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
    st1 = Stage1(g, CandidatesConfig(ppr=NO_PPR, k=20, embedding_share=0.25, popular_fill=False), embeddings=emb)
    batch = st1.generate(np.arange(60))
    for b in range(60):
        only_emb = (batch.source[b, : batch.count[b]] == 4).sum()
        fof_n = (batch.source[b, : batch.count[b]] & 1).sum()
        fof_alone = Stage1(g, CandidatesConfig(ppr=NO_PPR, k=20, embedding_share=0.0, popular_fill=False))
        assert only_emb <= 5 or fof_n == np.count_nonzero(fof_alone.generate([b]).cand[0] >= 0)
        row = batch.row(b)
        assert len(set(row.tolist())) == row.size and b not in row
        assert not set(row.tolist()) & set(g.neighbors(b).tolist())


def test_ann_index_serves_the_embedding_source_like_exact_search():
    from pymk.candidates.ann import AnnIndex
    from pymk.config import AnnConfig

    rng = np.random.default_rng(1)
    g = graph_from_pairs(rng.integers(0, 200, (700, 2)), 200)
    emb = rng.normal(size=(200, 8)).astype(np.float32)
    cfg = CandidatesConfig(ppr=NO_PPR, k=30, embedding_share=0.5, popular_fill=False)
    exact = Stage1(g, cfg, embeddings=emb).generate(np.arange(200))
    ann = Stage1(g, cfg, embeddings=emb, ann=AnnIndex.build(emb, None, AnnConfig(), kind="exact")).generate(
        np.arange(200))
    assert (exact.count == ann.count).all()
    same = [set(exact.row(b).tolist()) == set(ann.row(b).tolist()) for b in range(200)]
    assert np.mean(same) > 0.97  # float ties at a row's boundary may differ


def test_user_without_embedding_is_served_from_other_sources(caplog):
    from pymk.candidates.ann import AnnIndex
    from pymk.candidates.base import SOURCE_EMBEDDING
    from pymk.config import AnnConfig

    g = _graph()
    emb = np.random.default_rng(0).normal(size=(11, 4)).astype(np.float32)  # user 11 joined after the build
    index = AnnIndex.build(emb, None, AnnConfig(), kind="exact")
    index.remove([0])  # and user 0 was taken out of the index
    st1 = Stage1(g, CandidatesConfig(ppr=NO_PPR, k=6, embedding_share=0.5), embeddings=emb, ann=index)
    with caplog.at_level("WARNING", logger="pymk.candidates"):
        batch = st1.generate([0, 11, 3])
    assert st1.missing_embedding == 2 and "2 users have no embedding" in caplog.text
    for b in (0, 1):
        assert batch.count[b] == 6 and not (batch.source[b, :6] & SOURCE_EMBEDDING).any()
    assert 0 not in batch.row(2)  # removed users are not returned as candidates either
    assert (batch.source[2] & SOURCE_EMBEDDING).any()


def test_ppr_source_fills_its_quota_with_candidates_fof_missed():
    from pymk.candidates.base import SOURCE_PPR
    from pymk.candidates.ppr import personalized_pagerank

    rng = np.random.default_rng(2)
    g = graph_from_pairs(rng.integers(0, 400, (900, 2)), 400)
    k = 40
    cfg = CandidatesConfig(k=k, ppr=PprConfig(share=0.25), popular_fill=False)
    users = np.arange(0, 400, 3)
    batch = Stage1(g, cfg).generate(users)
    fof_only = Stage1(g, CandidatesConfig(ppr=NO_PPR, k=k, popular_fill=False)).generate(users)
    pc, ps, pn = personalized_pagerank(g, users, 400)
    for b, u in enumerate(users.tolist()):
        row = batch.row(b)
        assert len(set(row.tolist())) == row.size and u not in row
        assert not set(row.tolist()) & set(g.neighbors(u).tolist())
        fof = fof_only.row(b)
        ppr_new = [c for c in pc[b, : pn[b]].tolist() if c not in set(fof.tolist())]
        n_ppr = int((batch.source[b, : row.size] == SOURCE_PPR).sum())  # found by ppr alone
        # ppr keeps its quota (or all it has); fof keeps the rest, in its own order
        assert n_ppr == min(len(ppr_new), max(10, k - fof.size))
        assert row[: row.size - n_ppr].tolist() == fof[: row.size - n_ppr].tolist()
        assert row[row.size - n_ppr:].tolist() == ppr_new[:n_ppr]
        score = dict(zip(pc[b, : pn[b]].tolist(), ps[b, : pn[b]].tolist(), strict=True))
        for j, c in enumerate(row.tolist()):
            assert batch.features["ppr"][b, j] == score.get(c, 0.0)
            assert bool(batch.source[b, j] & SOURCE_PPR) == (c in score)


def test_sources_can_be_asked_for_one_at_a_time():
    rng = np.random.default_rng(3)
    g = graph_from_pairs(rng.integers(0, 200, (600, 2)), 200)
    st1 = Stage1(g, CandidatesConfig(k=30))
    only = st1.generate(np.arange(50), sources=("ppr",))
    assert (only.source[only.valid] == 8).all() and (only.count > 10).all()
    assert (st1.generate(np.arange(50), sources=("fof",)).source[:, 0] == 1).all()
