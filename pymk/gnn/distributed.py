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
