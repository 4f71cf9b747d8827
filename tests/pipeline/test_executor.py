"""The offline executors on a real 3-node local Ray cluster (`ray.cluster_utils.Cluster`): the ranker's
training lists equal the local executor's exactly, both write the same model, a task whose node dies is
retried on another node with the same result, and a build whose tasks cannot finish fails with a clear error
and leaves no model directory behind."""

from pathlib import Path

import numpy as np
import pytest

from pymk.config import PymkConfig
from pymk.graph.edges import EdgeList
from pymk.pipeline.build import build_from_edges
from pymk.pipeline.executor import ExecutorError, LocalExecutor, RayExecutor, make_executor
from pymk.ranking.learned import chunk_lists, training_data
from tests.helpers import synth_graph

ray = pytest.importorskip("ray")

from tests.ray_cluster import local_cluster  # noqa: E402

USERS = 500


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(head_cpus=0) as cw:  # tasks run on the two worker nodes
        yield cw


def _config():
    cfg = PymkConfig()
    cfg.ranker.kind = "lightgbm"
    cfg.ranker.rounds = 20
    cfg.ranker.train_users = 300
    cfg.ranker.splits = 2
    return cfg


def _edges(g):
    lo, hi = g.edge_pairs()
    return EdgeList(np.asarray(g.ids), lo.astype(np.int32), hi.astype(np.int32))


def test_ray_executor_gives_the_local_training_lists_and_model(cluster, tmp_path):
    g = synth_graph(USERS, 10, seed=4)
    cfg = _config()
    ex = RayExecutor()
    assert ex.describe()["nodes"] == 3
    local = training_data(g, cfg, log=lambda s: None)
    remote = training_data(g, cfg, log=lambda s: None, executor=ex)
    for key in ("X", "y", "group", "users"):
        assert np.array_equal(local[key], remote[key], equal_nan=True), key

    a = build_from_edges(_edges(g), tmp_path / "local", _config(), log=lambda s: None)
    b = build_from_edges(_edges(g), tmp_path / "ray", _config(), log=lambda s: None, executor=ex)
    for f in ("indptr.npy", "indices.npy", "ids.npy"):
        assert np.array_equal(np.load(a / "graph" / f), np.load(b / "graph" / f))
    assert np.array_equal(np.load(a / "features" / "users.npy"), np.load(b / "features" / "users.npy"),
                          equal_nan=True)
    # LightGBM on equal data, parameters and seed: the ranker's predictions agree to 1e-9
    import lightgbm as lgb

    pa = lgb.Booster(model_file=str(a / "ranker" / "model.txt")).predict(local["X"])
    pb = lgb.Booster(model_file=str(b / "ranker" / "model.txt")).predict(local["X"])
    assert np.max(np.abs(pa - pb)) < 1e-9


def _stalling(shared, item):
    """chunk_lists, except that the first attempt of chunk 0 writes its node's id to a marker file and waits
    there until that node is killed (the test kills it once the marker exists); the retry computes."""
    import time as _t

    import ray as _ray

    chunk_no, users, marker = item
    if chunk_no == 0 and not Path(marker).exists():
        Path(marker + ".tmp").write_text(_ray.get_runtime_context().get_node_id())
        Path(marker + ".tmp").rename(marker)
        while True:  # held until its node is killed; Ray then retries the task on the other node
            _t.sleep(0.05)
    return chunk_lists(shared, users)


def _kill_the_stalled_node(marker, c, workers):
    import time

    deadline = time.monotonic() + 120
    while not Path(marker).exists():
        assert time.monotonic() < deadline, "the stalled task never started"
        time.sleep(0.05)
    node_id = Path(marker).read_text()
    c.remove_node(next(w for w in workers if w.node_id == node_id))


def test_a_task_on_a_killed_node_is_retried_elsewhere(cluster, tmp_path):
    import threading

    from pymk.candidates.stage1 import Stage1
    from pymk.features.store import InProcessFeatureStore, user_feature_table

    c, workers = cluster
    g = synth_graph(300, 8, seed=2)
    shared = (g, Stage1(g, _config().candidates), InProcessFeatureStore(user_feature_table(g, None), 0))
    marker = str(tmp_path / "marker")
    items = [(i, np.arange(i * 64, (i + 1) * 64, dtype=np.int64), marker) for i in range(4)]
    want = LocalExecutor().map(lambda s, it: chunk_lists(s, it[1]), items, shared=shared)
    killer = threading.Thread(target=_kill_the_stalled_node, args=(marker, c, workers))
    killer.start()
    got = RayExecutor(max_retries=3).map(_stalling, items, shared=shared)
    killer.join()
    assert Path(marker).exists()  # the node did die under a running task
    for a, b in zip(want, got, strict=True):
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(x, y, equal_nan=True)


def test_a_build_whose_tasks_cannot_finish_fails_clearly_and_writes_no_model(cluster, tmp_path):
    def broken(shared, users):
        raise ValueError("chunk 0 is corrupt")

    ex = RayExecutor()
    with pytest.raises(ExecutorError, match="chunk 0 is corrupt"):
        ex.map(broken, [np.arange(3)], shared=None)

    class Failing(LocalExecutor):
        def map(self, fn, items, *, shared=None):
            return ex.map(broken, items, shared=shared)

    g = synth_graph(300, 8, seed=2)
    with pytest.raises(ExecutorError):
        build_from_edges(_edges(g), tmp_path / "m", _config(), log=lambda s: None, executor=Failing())
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.building-*"))


def test_executor_kinds():
    assert isinstance(make_executor("local"), LocalExecutor)
    with pytest.raises(ExecutorError, match="unknown executor 'spark'"):
        make_executor("spark")
    with pytest.raises(ExecutorError, match="--ray-address needs --executor ray"):
        make_executor("local", address="127.0.0.1:6379")


def test_partition_and_train_on_ray_matches_the_local_executor(cluster):
    """`gnn.strategy = "partition"`: the partitions trained as Ray tasks on the worker nodes give the model
    the local executor gives (same partitions, seeds and merge; float sums may differ in the last bits)."""
    from pymk.gnn.config import GnnConfig
    from pymk.gnn.partitioned import train_partitioned

    g = synth_graph(400, 10, seed=2)
    cfg = GnnConfig(dim=16, epochs=2, patience=5, seed=3, val_k=50, strategy="partition", partitions=2,
                    max_steps_per_epoch=20)
    local, r_local = train_partitioned(g, cfg, log=lambda s: None)
    remote, r_remote = train_partitioned(g, cfg, executor=RayExecutor(), log=lambda s: None)
    assert [h["loss"] for h in r_local.history] == pytest.approx([h["loss"] for h in r_remote.history], rel=1e-4)
    for name, value in local.state_dict().items():
        np.testing.assert_allclose(remote.state_dict()[name].numpy(), value.numpy(), rtol=1e-3, atol=1e-4,
                                   err_msg=name)


@pytest.mark.parametrize("kind", ["sage", "gat"])
def test_layer_wise_inference_as_ray_tasks_equals_the_local_one(cluster, kind):
    """Batch inference with each layer's chunks as Ray tasks on the worker nodes (the previous layer's
    output and the CSR through the object store) gives the in-process inference's embeddings."""
    import torch

    from pymk.gnn.config import GnnConfig
    from pymk.gnn.model import LinkEncoder, input_features
    from pymk.gnn.train import infer

    g = synth_graph(500, 10, seed=6)
    cfg = GnnConfig(kind=kind, dim=16)
    torch.manual_seed(0)
    model = LinkEncoder(g.num_users, cfg)
    struct = torch.from_numpy(input_features(g, cfg))
    local = infer(model, g, struct, chunk=64)
    remote = infer(model, g, struct, chunk=64, executor=RayExecutor())
    assert remote.shape == (g.num_users, 16)
    np.testing.assert_allclose(remote, local, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["ivf_sq8", "hnsw"])
def test_sharded_ann_shards_built_as_ray_tasks_answer_as_the_local_build(cluster, kind):
    """One ANN index per shard, each built by a Ray task (IVF cells trained once in the driver and shipped):
    the same users in each shard and the same answers as the index built in this process."""
    from pymk.candidates.ann import ShardedAnnIndex
    from pymk.config import AnnConfig
    from tests.candidates.test_ann import clustered

    emb = clustered(3000, 16, seed=2)
    shard_of = np.arange(3000) % 3
    cfg = AnnConfig(kind=kind)
    local = ShardedAnnIndex.build(emb, shard_of, cfg)
    remote = ShardedAnnIndex.build(emb, shard_of, cfg, executor=RayExecutor())
    for a, b in zip(local.shards, remote.shards, strict=True):
        assert np.array_equal(a.labels, b.labels) and a.index.ntotal == b.index.ntotal
    s_l, i_l = local.search(emb[:50], 20)
    s_r, i_r = remote.search(emb[:50], 20)
    np.testing.assert_allclose(s_r, s_l, rtol=1e-5, atol=1e-5)
    assert (i_r == i_l).mean() > 0.99  # ties may swap places


def test_an_edge_file_read_in_chunks_by_ray_tasks_reads_as_the_whole(cluster, tmp_path):
    """Text cut into ~4 KB chunks and Parquet into row groups, each parsed by a task on the cluster's nodes:
    the same rows, counts and examples as the sequential reader; a bad line is named as it names it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pymk.graph.chunked import read_edges_chunked
    from pymk.graph.ingest import IngestError, read_edges

    rng = np.random.default_rng(3)
    lines = [f"{a},{b},{t}" for a, b, t in rng.integers(0, 10**6, (3000, 3)).tolist()]
    lines[1234] = "# a comment in the middle"
    lines[2345] = "17,x,5"
    path = tmp_path / "e.csv"
    path.write_text("src,dst,ts\n" + "\n".join(lines) + "\n")
    ex = RayExecutor()
    got, want = read_edges_chunked(path, ex, skip_bad_rows=True, chunk_bytes=4096), read_edges(path, skip_bad_rows=True)
    assert got.src.tolist() == want.src.tolist() and got.dst.tolist() == want.dst.tolist()
    assert got.ts.tolist() == want.ts.tolist() and got.bad_examples == want.bad_examples
    assert (got.rows, got.bad_by_kind) == (want.rows, want.bad_by_kind) == (2999, {"non-integer id": 1})
    with pytest.raises(IngestError) as err:
        read_edges_chunked(path, ex, chunk_bytes=4096)
    assert (err.value.line, err.value.content) == (2347, "17,x,5")  # the header is line 1
    pq.write_table(pa.table({"src": want.src, "dst": want.dst, "ts": want.ts}), tmp_path / "e.parquet",
                   row_group_size=250)
    got = read_edges_chunked(tmp_path / "e.parquet", ex)
    assert got.src.tolist() == want.src.tolist() and got.ts.tolist() == want.ts.tolist()
