"""Adding a delta of new friendships to a built model's graph (the incremental path's first step)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pymk.graph.edges import EdgeList
from pymk.graph.snapshot import CSRGraph
from pymk.pipeline.model import Model, ModelError


def replace_snapshot(model_dir: Path, graph: CSRGraph) -> None:
    """Writes the graph beside the old snapshot, then swaps directories (open memory maps stay valid)."""
    import os
    import shutil

    tmp = model_dir / "graph.new"
    shutil.rmtree(tmp, ignore_errors=True)
    graph.save(tmp)
    shutil.rmtree(model_dir / "graph")
    os.replace(tmp, model_dir / "graph")


def merge_delta(model: Model, delta_path: str | Path, *, log=print) -> tuple[CSRGraph, np.ndarray, np.ndarray]:
    """Reads new edges between users the model knows and returns (merged graph, delta lo, delta hi).

    The merged graph replaces the model's snapshot on disk. New users need a rebuild (the embedding
    table has one row per known user); a sharded model needs a rebuild too (its plan would go stale).
    Shapes: delta lo, hi (d,) int64 dense indices of the edges that were not already friendships.
    """
    from pymk.pipeline.build import ingest

    if model.plan is not None:
        raise ModelError(f"{model.path} is sharded; rebuild it to add edges (its shard plan would go stale)")
    edges, _ = ingest(delta_path, show_progress=False, log=log)
    a = model.index_of(edges.ids[edges.lo])
    b = model.index_of(edges.ids[edges.hi])
    unknown = np.unique(np.concatenate([edges.ids[edges.lo][a < 0], edges.ids[edges.hi][b < 0]]))
    if unknown.size:
        raise ModelError(f"{delta_path}: {unknown.size} users are not in the model (e.g. {unknown[:5].tolist()}); "
                         f"new users need `pymk build`")
    g = model.snapshot
    lo, hi = g.edge_pairs()
    n = np.int64(g.num_users)
    old = lo.astype(np.int64) * n + hi
    new = np.minimum(a, b) * n + np.maximum(a, b)
    fresh = np.setdiff1d(np.unique(new), old)
    keys = np.union1d(old, fresh)
    dtype = g.indices.dtype
    # np.array copies the ids: the old snapshot's files are replaced while they may be mapped
    merged = CSRGraph.from_edges(EdgeList(np.array(g.ids), (keys // n).astype(dtype), (keys % n).astype(dtype)),
                                 meta={**{k: v for k, v in g.meta.items() if k not in ("created_at",)},
                                       "delta": str(delta_path), "delta_edges": int(fresh.size)})
    log(f"delta {delta_path}: {fresh.size:,} new friendships ({new.size - fresh.size:,} already known)")
    if fresh.size == 0:
        raise ModelError(f"{delta_path}: no new friendships to fine-tune on")
    return merged, fresh // n, fresh % n
