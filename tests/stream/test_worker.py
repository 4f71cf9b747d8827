import numpy as np
import torch

from pymk.candidates.ann import AnnIndex
from pymk.config import AnnConfig
from pymk.gnn.config import GnnConfig
from pymk.gnn.model import LinkEncoder
from pymk.stream.adjacency import LiveAdjacency
from pymk.stream.log import FileEventLog
from pymk.stream.refresh import EmbeddingRefresher
from pymk.stream.staleness import StalenessTracker
from pymk.stream.worker import StreamWorker
from tests.helpers import graph_from_pairs
from tests.stream.test_refresh import _full


def test_worker_applies_the_log_to_embeddings_ann_and_staleness(tmp_path):
    rng = np.random.default_rng(4)
    n = 120
    g = graph_from_pairs(rng.integers(0, n, (400, 2)), n)
    g.ids = np.arange(n, dtype=np.int64) * 10  # external ids differ from dense indices
    torch.manual_seed(0)
    model = LinkEncoder(n, GnnConfig(dim=16)).eval()
    adj = LiveAdjacency(g)
    refresher = EmbeddingRefresher(model, adj, radius=2)
    stats = refresher.stats
    ann = AnnIndex.build(refresher.emb.copy(), config=AnnConfig(kind="exact"))
    log = FileEventLog(tmp_path / "events.log")
    seen = []
    worker = StreamWorker(log, refresher, g.index_of, ann=ann, on_refresh=lambda r, change: seen.append(r.users),
                          staleness=StalenessTracker(adj.degree), batch=3)
    a, b = next((u, v) for u in range(n) for v in range(u + 1, n) if not adj.has_edge(u, v))
    log.append(a * 10, b * 10, 1.0)
    log.append(a * 10, 99_999, 2.0)  # a user the model does not have: counted, skipped
    log.append(b * 10, a * 10, 3.0)  # the same friendship again: nothing to do
    log.append(1 * 10, 2 * 10, 4.0)
    assert worker.poll() == 3 and worker.poll() == 1 and worker.poll() == 0
    assert worker.stats.events == 4 and worker.stats.ignored == 1
    assert worker.stats.new_edges == 1 + (not g.neighbors(1).tolist().count(2))
    emb, _ = _full(model, adj, stats)
    np.testing.assert_allclose(refresher.emb, emb, rtol=1e-4, atol=1e-5)
    refreshed = np.unique(np.concatenate(seen))
    assert set(adj.ball([a, b], 2).tolist()) <= set(refreshed.tolist())
    # the ANN answers from the new vectors: same top-5 as exact search over the live matrix
    q = emb[[a, b, 7]]
    _, got = ann.search(q, 5)
    want = np.argsort(-(q @ emb.T), axis=1, kind="stable")[:, :5]
    assert np.array_equal(np.sort(got, axis=1), np.sort(want, axis=1))
    assert worker.staleness.counts[[a, b]].tolist() == [0, 0]  # refreshed: nothing pending
    # a new worker replaying the same log from the start reaches the same state
    adj2 = LiveAdjacency(g)
    w2 = StreamWorker(log, EmbeddingRefresher(model, adj2, radius=2), g.index_of)
    assert w2.drain() == 4
    np.testing.assert_allclose(w2.refresher.emb, refresher.emb, rtol=1e-4, atol=1e-5)
