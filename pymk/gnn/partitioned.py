"""The brief's partition-and-train (`gnn.strategy = "partition"`): P graph partitions trained apart, their
boundary embeddings exchanged through a shared store between rounds.

    store: the global model: dense weights W (input projection, layers, norms) and the id-embedding table E
    round r (one per epoch):
      each partition p (a task: in this process, or a Ray task with `--executor ray`) takes W, the rows of E
      of its users and of its halo (their friends homed on other partitions: the boundary, as the store
      holds them now) and the subgraph induced on them; trains one local epoch on the friendships with an
      end it owns; returns its W_p and the rows of its own users
      store: W = mean of the W_p weighted by their friendships, E[users of p] = the rows p returned
      (a halo row is its owner's: the boundary exchange)
    the global model is validated as the data-parallel trainer is (recall@val_k of carved validation
    edges, inference over the whole graph); the best round is kept, `patience` rounds without gain stop it.

One W for every user, so every embedding lives in one space and Stage 1 searches them all together, as
after data-parallel training. Partitions: `pymk.graph.partition` (community: few friendships cross). A
task's steps are its share of `max_steps_per_epoch` by friendships, so a round does the data-parallel
epoch's work. Input features are the whole graph's (a halo user's degree is cut in its subgraph).
"""

from __future__ import annotations

import time

import numpy as np

from pymk.gnn.config import GnnConfig
from pymk.graph.snapshot import CSRGraph


def _subgraph(mp: CSRGraph, owned: np.ndarray) -> dict:
    """The subgraph a partition trains on: its users (first), their halo, the friendships among them (a
    CSRGraph over local indices, made once for every round), and as positives the friendships with an end it
    owns. Shapes in the returned dict: nodes (k,) global indices; pos_lo, pos_hi (m_p,) local."""
    from pymk.graph.edges import EdgeList

    indptr, indices = np.asarray(mp.indptr, np.int64), np.asarray(mp.indices, np.int64)
    starts, ends = indptr[owned], indptr[owned + 1]
    nbrs = np.concatenate([indices[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]) \
        if owned.size else np.zeros(0, np.int64)
    is_owned = np.zeros(mp.num_users, bool)
    is_owned[owned] = True
    halo = np.unique(nbrs[~is_owned[nbrs]])
    nodes = np.concatenate([owned, halo])
    local = np.full(mp.num_users, -1, np.int64)
    local[nodes] = np.arange(nodes.size)
    lo, hi = mp.edge_pairs()
    lo, hi = lo.astype(np.int64), hi.astype(np.int64)
    inside = (local[lo] >= 0) & (local[hi] >= 0)
    a, b = local[lo[inside]], local[hi[inside]]
    mine = is_owned[lo[inside]] | is_owned[hi[inside]]
    x, y = np.minimum(a, b), np.maximum(a, b)  # local order differs from global: each pair low end first
    order = np.lexsort((y, x))
    dtype = np.int32 if nodes.size < 2**31 else np.int64
    graph = CSRGraph.from_edges(EdgeList(np.arange(nodes.size, dtype=np.int64), x[order].astype(dtype),
                                         y[order].astype(dtype)))
    return {"nodes": nodes, "owned": int(owned.size), "graph": graph, "pos_lo": a[mine], "pos_hi": b[mine]}


def _train_part(shared: dict, item: dict) -> dict:
    """One partition's local epoch (a module-level function: a Ray task runs it). Returns its dense weights,
    its own users' id-embedding rows, its positives and its loss."""
    import torch

    from pymk.gnn.model import LinkEncoder
    from pymk.gnn.train import Trainer

    cfg = GnnConfig.from_dict({**shared["config"], "epochs": 1, "val_fraction": 0.0, "seed": item["seed"],
                               "max_steps_per_epoch": item["steps"], "workers": 1})
    g = item["graph"]
    model = LinkEncoder(g.num_users, cfg, item["struct"].shape[1])
    state = {name: torch.from_numpy(v) for name, v in shared["dense"].items()}
    state["emb.weight"] = torch.from_numpy(item["rows"])
    model.load_state_dict(state)
    trainer = Trainer(g, cfg, model=model, positives=(item["pos_lo"], item["pos_hi"]), struct=item["struct"])
    result = trainer.fit(progress=False, log=lambda s: None)
    out = {name: v.detach().numpy().copy() for name, v in model.state_dict().items() if name != "emb.weight"}
    return {"dense": out, "rows": model.emb.weight.detach()[: item["owned"]].numpy().copy(),
            "positives": int(item["pos_lo"].size), "loss": result.history[0]["loss"] if result.history else 0.0,
            "steps": result.steps}


def train_partitioned(graph: CSRGraph, config: GnnConfig, *, executor=None, model=None, log=print):
    """Trains a `LinkEncoder` by partition-and-train (module docstring). Returns (model, TrainResult).

    executor: where the partitions train (`pymk.pipeline.executor`; default: this process, one after another).
    model: start from these weights (default: a fresh model, seeded as the data-parallel trainer's)."""
    import torch

    from pymk.gnn.model import input_features
    from pymk.gnn.train import Trainer, TrainResult
    from pymk.graph.partition import partition
    from pymk.pipeline.executor import LocalExecutor

    executor = executor or LocalExecutor()
    # the global model and its validation, exactly as one data-parallel worker would have them
    glob = Trainer(graph, config, model=model)
    mp = glob.graph  # validation edges carved out: no partition trains on them
    struct = input_features(graph, config)
    parts = min(config.partitions, max(1, mp.num_users))
    home = partition(mp, parts, "community") if parts > 1 else np.zeros(mp.num_users, np.int32)
    subs = [_subgraph(mp, np.flatnonzero(home == p)) for p in range(parts)]
    positives = sum(s["pos_lo"].size for s in subs)
    m_total = max(1, positives)
    per_pos = 2 + config.negatives
    full_steps = -(-m_total // max(1, config.batch // per_pos))
    if config.max_steps_per_epoch:
        full_steps = min(full_steps, config.max_steps_per_epoch)
    crossing = int(positives - mp.num_edges)  # friendships two partitions train
    log(f"gnn partition-and-train: {parts} partitions, {mp.num_edges:,} friendships ({crossing:,} across "
        f"partitions, trained by both ends' partitions), halo {sum(s['nodes'].size - s['owned'] for s in subs):,} "
        f"users")
    result = TrainResult()
    best_state, bad = None, 0
    gmodel = glob.model
    for r in range(config.epochs):
        t0 = time.perf_counter()
        state = gmodel.state_dict()
        table = state["emb.weight"].detach().numpy()
        dense = {name: v.detach().numpy().copy() for name, v in state.items() if name != "emb.weight"}
        items = [{"nodes": s["nodes"], "owned": s["owned"], "graph": s["graph"], "pos_lo": s["pos_lo"],
                  "pos_hi": s["pos_hi"], "rows": table[s["nodes"]].copy(), "struct": struct[s["nodes"]],
                  "steps": max(1, round(full_steps * s["pos_lo"].size / m_total)),
                  "seed": config.seed * 1_000_003 + r * parts + p} for p, s in enumerate(subs)]
        outs = executor.map(_train_part, items, shared={"config": config.to_dict(), "dense": dense})
        weights = np.array([o["positives"] for o in outs], np.float64)
        weights = weights / max(weights.sum(), 1.0)
        merged = {name: torch.from_numpy(sum(w * o["dense"][name] for w, o in zip(weights, outs, strict=True))
                                         .astype(dense[name].dtype)) for name in dense}
        new_table = table.copy()
        for s, o in zip(subs, outs, strict=True):
            new_table[s["nodes"][: s["owned"]]] = o["rows"]
        merged["emb.weight"] = torch.from_numpy(new_table)
        gmodel.load_state_dict(merged)
        val = glob.validate()
        loss = float(np.dot(weights, [o["loss"] for o in outs]))
        result.steps += sum(o["steps"] for o in outs)
        rec = {"epoch": r + 1, "loss": loss, "val_recall": val, "seconds": round(time.perf_counter() - t0, 2)}
        result.history.append(rec)
        log(f"round {r + 1}: loss {loss:.4f}  val recall@{config.val_k} {val:.4f}  ({rec['seconds']}s)")
        if val > result.best_val:
            result.best_val, result.best_epoch, bad = val, r + 1, 0
            best_state = {k: v.detach().clone() for k, v in gmodel.state_dict().items()}
        else:
            bad += 1
            if bad >= config.patience:
                break
    if best_state is not None:
        gmodel.load_state_dict(best_state)
    return gmodel, result
