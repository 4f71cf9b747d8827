"""Two data-parallel workers with the same global batch follow one worker's loss curve."""

import numpy as np
import pytest

from pymk.gnn.config import GnnConfig
from pymk.gnn.distributed import train_data_parallel
from pymk.gnn.train import Trainer
from tests.helpers import synth_graph
from tests.ray_cluster import local_cluster

TOLERANCE = 1e-3  # relative; float reductions differ in order between one and two processes


@pytest.fixture(scope="module")
def graph():
    return synth_graph(400, 8, 9)


def test_two_workers_match_one_worker(graph):
    common = {"dim": 16, "epochs": 3, "patience": 10, "max_steps_per_epoch": 6, "seed": 3, "negatives": 1,
              "dropout": 0.0}  # dropout masks are random per process: equal in distribution only
    # 3 seed nodes per positive (source, destination, one negative): 258 = 2 x 129 seeds per step
    single = Trainer(graph, GnnConfig(batch=258, **common)).fit(progress=False, log=lambda s: None)
    model, multi = train_data_parallel(graph, GnnConfig(batch=129, **common), 2, log=lambda s: None)
    one = np.array([h["loss"] for h in single.history])
    two = np.array([h["loss"] for h in multi.history])
    assert one.size == two.size == 3
    np.testing.assert_allclose(two, one, rtol=TOLERANCE)
    assert multi.history[-1]["val_recall"] == pytest.approx(single.history[-1]["val_recall"], abs=0.02)


def test_ray_train_workers_match_one_worker(graph):
    """The GNN stage under `--executor ray`: two Ray Train workers (TorchTrainer, gloo) on a 3-node local Ray
    cluster follow one worker's loss curve, as the torch.distributed workers do."""
    pytest.importorskip("ray")

    from pymk.gnn.distributed import train_ray

    common = {"dim": 16, "epochs": 3, "patience": 10, "max_steps_per_epoch": 6, "seed": 3, "negatives": 1,
              "dropout": 0.0}
    single = Trainer(graph, GnnConfig(batch=258, **common)).fit(progress=False, log=lambda s: None)
    with local_cluster():
        model, multi = train_ray(graph, GnnConfig(batch=129, **common), 2, log=lambda s: None)
    one = np.array([h["loss"] for h in single.history])
    two = np.array([h["loss"] for h in multi.history])
    assert one.size == two.size == 3
    np.testing.assert_allclose(two, one, rtol=TOLERANCE)
    assert multi.history[-1]["val_recall"] == pytest.approx(single.history[-1]["val_recall"], abs=0.02)
    assert model.config.dim == 16
