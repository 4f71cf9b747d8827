"""`gnn.device`: resolution, clear errors, and the same results on a GPU as on the CPU where one exists.

The CUDA cases run where torch sees a GPU (skipped on the CPU-only CI machine; run on a GPU machine with
`pytest tests/gnn`)."""

import numpy as np
import pytest
import torch

from pymk.gnn.config import GnnConfig
from pymk.gnn.device import DeviceError, resolve_device
from pymk.gnn.model import LinkEncoder, structural_features
from pymk.gnn.train import Trainer, infer, load_checkpoint, save_checkpoint
from tests.helpers import graph_from_pairs, synth_graph

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")


@pytest.fixture(scope="module")
def graph():
    return synth_graph(600, 10, 5)


def test_auto_and_cpu():
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


@pytest.mark.skipif(CUDA, reason="checks the error where there is no GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(DeviceError, match="sees no CUDA device; use 'auto' or 'cpu'"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="sees no CUDA device"):
        Trainer(graph_from_pairs([(0, 1), (1, 2)], 3), GnnConfig(dim=8, device="cuda:0"))


def test_bad_device_string():
    with pytest.raises(ValueError, match="gnn.device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        GnnConfig(device="gpu").validate()


@needs_cuda
def test_cuda_index_out_of_range():
    with pytest.raises(DeviceError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@needs_cuda
@pytest.mark.parametrize("kind", ["sage", "gat"])
def test_gpu_inference_equals_cpu(kind):
    rng = np.random.default_rng(0)
    g = graph_from_pairs(rng.integers(0, 300, (2000, 2)), 300)
    model = LinkEncoder(300, GnnConfig(kind=kind, dim=32)).eval()
    struct = torch.from_numpy(structural_features(g.degree))
    on_cpu = infer(model, g, struct, chunk=50)
    on_gpu = infer(model.to("cuda"), g, struct, chunk=50)
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-3, atol=1e-4)


@needs_cuda
def test_gpu_training_learns_and_its_checkpoint_loads_on_cpu(graph, tmp_path):
    cfg = GnnConfig(dim=32, epochs=4, patience=10, seed=1, val_k=50, device="cuda")
    trainer = Trainer(graph, cfg)
    assert next(trainer.model.parameters()).is_cuda
    untrained = trainer.validate()
    result = trainer.fit(progress=False, log=lambda s: None)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.best_val > max(untrained + 0.05, 0.15)
    save_checkpoint(tmp_path, trainer.model, graph, result)
    back = load_checkpoint(tmp_path, graph)
    assert not next(back.parameters()).is_cuda
    struct = torch.from_numpy(structural_features(graph.degree))
    np.testing.assert_allclose(infer(back, graph, struct), infer(trainer.model, graph, struct), rtol=1e-3, atol=1e-4)


@needs_cuda
def test_two_workers_on_gpu_match_one_worker(graph):
    from pymk.gnn.distributed import train_data_parallel

    common = {"dim": 16, "epochs": 2, "patience": 10, "max_steps_per_epoch": 6, "seed": 3, "negatives": 1,
              "dropout": 0.0, "device": "cuda"}
    single = Trainer(graph, GnnConfig(batch=258, **common)).fit(progress=False, log=lambda s: None)
    _, multi = train_data_parallel(graph, GnnConfig(batch=129, **common), 2, log=lambda s: None)
    np.testing.assert_allclose([h["loss"] for h in multi.history], [h["loss"] for h in single.history], rtol=1e-3)
