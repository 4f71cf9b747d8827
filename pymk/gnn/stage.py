"""The GNN stage of `pymk build` / `pymk train`: train (or fine-tune), infer, store in the model dir.

    DIR/gnn/checkpoint.json, model.pt   self-describing checkpoint (config, history)
    DIR/gnn/embeddings.npy              (n, d) float32, row i = dense user i of DIR/graph
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pymk.gnn.config import GnnConfig
from pymk.graph.snapshot import CSRGraph


def train_embeddings(graph: CSRGraph, config: GnnConfig, out_dir: Path | None = None, *, workers: int = 1,
                     from_checkpoint: Path | None = None, positives=None, progress: bool = True,
                     infer_graph: CSRGraph | None = None, log=print, ray: bool = False) -> tuple[np.ndarray, dict]:
    """Trains on `graph` and returns (embeddings (n, d) float32, stage summary); saves to out_dir if given.

    workers > 1: data-parallel, as torch.distributed processes on this machine, or with `ray` as Ray Train
    workers on the Ray cluster this process is connected to (`pymk.gnn.distributed`). `config.strategy`
    "partition": partition-and-train instead (`pymk.gnn.partitioned`; its partitions as Ray tasks with `ray`).
    infer_graph: compute the embeddings by message passing over this graph (same users) instead of
    `graph`, e.g. weights trained on the ranker's internal G', embeddings over the whole graph G.
    """
    import torch

    from pymk.gnn.device import resolve_device
    from pymk.gnn.model import input_features
    from pymk.gnn.train import Trainer, infer, load_checkpoint, save_checkpoint

    t0 = time.perf_counter()
    model = load_checkpoint(from_checkpoint, graph) if from_checkpoint else None
    if model is not None:
        from pymk.gnn.config import CheckpointError

        arch = ("kind", "dim", "layers")
        diff = [f"{k}: checkpoint {getattr(model.config, k)} vs config {getattr(config, k)}" for k in arch
                if getattr(model.config, k) != getattr(config, k)]
        if diff:
            raise CheckpointError(f"{from_checkpoint}: the checkpoint's model differs from the config ("
                                  + "; ".join(diff) + "); train from scratch or use the checkpoint's settings")
    if workers > 1 and positives is not None:
        raise ValueError("fine-tuning on a delta runs on one worker")
    tasks = None  # with `ray`: partition-and-train's partitions and the batch inference as Ray tasks
    if ray:
        from pymk.pipeline.executor import RayExecutor

        tasks = RayExecutor()
    if config.strategy == "partition" and positives is None:
        from pymk.gnn.partitioned import train_partitioned

        model, result = train_partitioned(graph, config, executor=tasks, model=model, log=log)
    elif workers > 1 and ray:
        from pymk.gnn.distributed import train_ray

        model, result = train_ray(graph, config, workers, model=model, log=log)
    elif workers > 1:
        from pymk.gnn.distributed import train_data_parallel

        model, result = train_data_parallel(graph, config, workers, model=model, log=log)
    else:
        trainer = Trainer(graph, config, model=model, positives=positives)
        result = trainer.fit(progress=progress, log=log)
        model = trainer.model
    target = graph if infer_graph is None else infer_graph
    emb = infer(model, target, torch.from_numpy(input_features(target, model.config)), executor=tasks)
    summary = {"kind": config.kind, "dim": config.dim, "device": str(resolve_device(config.device)),
               "epochs_run": len(result.history),
               "best_epoch": result.best_epoch, "val_recall": round(result.best_val, 4), "val_k": config.val_k,
               "sample_share": round(result.sample_seconds / max(result.step_seconds, 1e-9), 4),
               "max_batch_nodes": result.max_batch_nodes, "workers": workers,
               "strategy": config.strategy if positives is None else "fine_tune",
               "runner": "ray_train" if workers > 1 and ray else ("torch" if workers > 1 else "single"),
               "train_edges": graph.num_edges,
               "fine_tuned_from": str(from_checkpoint) if from_checkpoint else None,
               "delta_edges": None if positives is None else int(len(positives[0])),
               "seconds": round(time.perf_counter() - t0, 2)}
    if out_dir is not None:
        out_dir = Path(out_dir)
        save_checkpoint(out_dir, model, graph, result)
        np.save(out_dir / "embeddings.npy", emb)
    return emb, summary


def embed(checkpoint_dir: Path, graph: CSRGraph) -> np.ndarray:
    """Embeddings of `graph`'s users by a saved checkpoint's weights, message passing over `graph`.

    Shapes: -> (n, d) float32."""
    import torch

    from pymk.gnn.model import input_features
    from pymk.gnn.train import infer, load_checkpoint

    model = load_checkpoint(checkpoint_dir, graph)
    return infer(model, graph, torch.from_numpy(input_features(graph, model.config)))
