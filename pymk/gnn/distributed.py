"""Data-parallel training with torch.distributed: W processes, one model replica each.

Every global batch (batch seed nodes x W) is drawn identically on all ranks from the same seeded
generator; rank r trains on its slice; DistributedDataParallel all-reduces (averages) the gradients,
so W workers take the same optimisation steps as one worker with the whole global batch (the sampler
draws each node's neighbours from a per-node stream, so slicing a batch changes no sample).
Backend: gloo, on the CPU and on GPUs alike: the id embedding's gradients are sparse, and nccl all-reduces
dense tensors only; gloo all-reduces CUDA tensors too (measured: 2 ranks on one GPU = 1 worker's curve).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pymk.gnn.config import GnnConfig
from pymk.graph.snapshot import CSRGraph


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, graph: CSRGraph, config: GnnConfig, state, out: str) -> None:
    from pymk.gnn.device import resolve_device
    from pymk.gnn.train import Trainer, cpu_state_dict

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    device = resolve_device(config.device, rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        trainer = Trainer(graph, config, rank=rank, world=world)
        if state is not None:
            trainer.model.load_state_dict(state)
        result = trainer.fit(progress=rank == 0, log=print if rank == 0 else (lambda s: None))
        if rank == 0:
            torch.save(cpu_state_dict(trainer.model), Path(out) / "model.pt")
            (Path(out) / "result.json").write_text(json.dumps(result.__dict__))
        # No rank tears its connections down while another may still be sending.
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Skip interpreter finalisation: torch/gloo background threads torn down by static destructors at exit
    # have aborted a worker ("terminate called without an active exception") after training had succeeded.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def train_data_parallel(graph: CSRGraph, config: GnnConfig, workers: int, *, model=None, log=print):
    """Runs `workers` processes; returns (model with rank 0's final weights, TrainResult)."""
    from pymk.gnn.device import resolve_device
    from pymk.gnn.model import LinkEncoder, input_features
    from pymk.gnn.train import TrainResult

    graph = CSRGraph(np.asarray(graph.indptr), np.asarray(graph.indices), np.asarray(graph.ids),
                     None if graph.ts is None else np.asarray(graph.ts), dict(graph.meta))
    state = model.state_dict() if model is not None else None
    with tempfile.TemporaryDirectory(prefix="pymk-ddp-") as tmp:
        device = resolve_device(config.device)  # fails here, clearly, before any worker starts
        log(f"data-parallel training on {workers} workers ({device.type}, gloo)")
        mp.spawn(_worker, args=(workers, _free_port(), graph, config, state, tmp), nprocs=workers, join=True)
        out = LinkEncoder(graph.num_users, config, input_features(graph, config).shape[1])
        out.load_state_dict(torch.load(Path(tmp) / "model.pt", map_location="cpu", weights_only=True))
        result = TrainResult(**json.loads((Path(tmp) / "result.json").read_text()))
    return out, result


def _ray_train_loop(cfg: dict) -> None:
    """One Ray Train worker: Ray Train has set up the process group (gloo); rank 0 reports the weights."""
    import ray
    import ray.train

    from pymk.gnn.device import resolve_device
    from pymk.gnn.train import Trainer, cpu_state_dict

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    graph, config, state = ray.get(cfg["inputs"])
    torch.set_num_threads(max(1, int(cfg["threads"])))
    device = resolve_device(config.device, ctx.get_local_rank())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    trainer = Trainer(graph, config, rank=rank, world=world)
    if state is not None:
        trainer.model.load_state_dict(state)
    result = trainer.fit(progress=False, log=lambda s: None)
    checkpoint = None
    if rank == 0:
        out = tempfile.mkdtemp(prefix="pymk-raytrain-")
        torch.save(cpu_state_dict(trainer.model), Path(out) / "model.pt")
        (Path(out) / "result.json").write_text(json.dumps(result.__dict__))
        checkpoint = ray.train.Checkpoint.from_directory(out)
    ray.train.report({"epochs": len(result.history)}, checkpoint=checkpoint)


def train_ray(graph: CSRGraph, config: GnnConfig, workers: int, *, model=None, log=print,
              storage: str | None = None):
    """Data-parallel training through Ray Train (`TorchTrainer`, gloo): `workers` Ray workers anywhere on the
    cluster this process is connected to, each sampling its own slice of every global batch (the same
    optimisation as `train_data_parallel`). Returns (model with rank 0's final weights, TrainResult)."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from pymk.gnn.device import resolve_device
    from pymk.gnn.model import LinkEncoder, input_features
    from pymk.gnn.train import TrainResult

    graph = CSRGraph(np.asarray(graph.indptr), np.asarray(graph.indices), np.asarray(graph.ids),
                     None if graph.ts is None else np.asarray(graph.ts), dict(graph.meta))
    state = model.state_dict() if model is not None else None
    device = resolve_device(config.device)  # fails here, clearly, before any worker starts
    cpus = ray.cluster_resources().get("CPU", 1)
    log(f"data-parallel training on {workers} Ray Train workers ({device.type}, gloo)")
    with tempfile.TemporaryDirectory(prefix="pymk-raytrain-") as tmp:
        trainer = TorchTrainer(
            _ray_train_loop,
            train_loop_config={"inputs": ray.put((graph, config, state)), "threads": max(1, cpus // workers)},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=device.type == "cuda",
                                         resources_per_worker={"CPU": 1}),
            torch_config=TorchConfig(backend="gloo"),
            run_config=RunConfig(storage_path=storage or tmp, name="pymk-gnn"),
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"Ray Train returned no model: {result.error}")
        with result.checkpoint.as_directory() as d:
            out = LinkEncoder(graph.num_users, config, input_features(graph, config).shape[1])
            out.load_state_dict(torch.load(Path(d) / "model.pt", map_location="cpu", weights_only=True))
            res = TrainResult(**json.loads((Path(d) / "result.json").read_text()))
    return out, res
