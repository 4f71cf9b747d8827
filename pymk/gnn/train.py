"""Mini-batch link-prediction training, full-graph layer-wise inference, checkpoints.

A step: pick positive edges, draw negatives for their sources (half uniform users, half hard ones:
2-hop non-friends from a random walk u -> v -> w), sample the seeds' neighbourhoods with the batch's
positive edges removed (no leakage), embed, score by dot product, BCE (or BPR) loss. Early stopping
watches recall@val_k (500) on validation edges carved out of the train graph (the latest ones by time when
edges have timestamps, else random), which are absent from the message-passing graph.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pymk import __version__
from pymk.gnn.config import CheckpointError, GnnConfig
from pymk.gnn.device import resolve_device
from pymk.gnn.model import LinkEncoder, input_features, neighbour_mean
from pymk.gnn.optim import RowAdam
from pymk.gnn.sampler import NeighborSampler
from pymk.graph.edges import EdgeList
from pymk.graph.snapshot import CSRGraph
from pymk.graph.subgraph import upper_values

CHECKPOINT_FORMAT = "pymk-gnn-checkpoint"
CHECKPOINT_VERSION = 1


def carve_validation(graph: CSRGraph, fraction: float, seed: int) -> tuple[CSRGraph, np.ndarray, np.ndarray]:
    """Removes `fraction` of edges (latest by ts, else random) from the graph. Returns (mp graph, lo, hi)."""
    lo, hi = graph.edge_pairs()
    m = lo.size
    n_val = int(fraction * m)
    if graph.ts is not None:
        ts = upper_values(graph, np.asarray(graph.ts))  # each edge's time, in edge_pairs order
        order = np.argsort(ts, kind="stable")
        val = order[m - n_val:]
    else:
        val = np.random.default_rng(seed).permutation(m)[:n_val]
    keep = np.ones(m, bool)
    keep[val] = False
    mp = CSRGraph.from_edges(EdgeList(np.asarray(graph.ids), lo[keep], hi[keep]))
    return mp, lo[val].astype(np.int64), hi[val].astype(np.int64)


def hard_negatives(graph: CSRGraph, src: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 2-hop non-friend per source via u -> v -> w; a uniform user where the walk fails."""
    indptr, indices = np.asarray(graph.indptr), np.asarray(graph.indices)
    deg = np.diff(indptr)
    n = graph.num_users
    out = rng.integers(0, n, src.size)
    ok = deg[src] > 0
    v = indices[indptr[src[ok]] + (rng.random(ok.sum()) * deg[src[ok]]).astype(np.int64)]
    dv = deg[v]
    w = indices[indptr[v] + (rng.random(v.size) * dv).astype(np.int64)]
    s = src[ok]
    # reject w == u and friends of u (binary search in u's sorted row)
    pos = np.array([np.searchsorted(indices[indptr[a]:indptr[a + 1]], b) for a, b in zip(s, w, strict=True)])
    is_friend = np.array([p < deg[a] and indices[indptr[a] + p] == b for a, b, p in zip(s, w, pos, strict=True)],
                         bool) if s.size else np.zeros(0, bool)
    good = (w != s) & ~is_friend
    idx = np.flatnonzero(ok)[good]
    out[idx] = w[good]
    return out


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val: float = -1.0
    sample_seconds: float = 0.0
    step_seconds: float = 0.0
    steps: int = 0
    sampled_nodes: int = 0
    max_batch_nodes: int = 0


class Trainer:
    """Trains a `LinkEncoder` on one graph (optionally one rank of a data-parallel group).

    Args:
        graph: the train graph (validation edges are carved out of it here).
        config: `GnnConfig`.
        rank, world: data-parallel position; each rank takes its slice of every global batch.
        model: start from these weights (fine-tuning). positives: train on these edges only (a delta of
            new friendships, already part of `graph`), e.g. `pymk train --from-checkpoint --delta`.
        struct: the users' input features (default: from `graph`; a partition's subgraph passes the whole
            graph's, since its boundary users' degrees are cut). Shape (n, s).
        freeze_dense: train only the id-embedding rows, the layers stay as given (`pymk update`: the users
            not re-embedded keep vectors of the given layers, so refreshed ones must come from the same).
    """

    def __init__(self, graph: CSRGraph, config: GnnConfig, *, rank: int = 0, world: int = 1,
                 model: LinkEncoder | None = None, positives: tuple[np.ndarray, np.ndarray] | None = None,
                 struct: np.ndarray | None = None, freeze_dense: bool = False):
        config.validate()
        self.config, self.rank, self.world = config, rank, world
        self.full = graph
        self.device = resolve_device(config.device, rank)
        self.graph, self.val_lo, self.val_hi = carve_validation(graph, config.val_fraction, config.seed)
        struct = input_features(self.graph, config) if struct is None else struct
        self.struct = torch.from_numpy(np.ascontiguousarray(struct, np.float32)).to(self.device)
        torch.manual_seed(config.seed)
        if model is None:
            from pymk.gnn.model import community_labels

            model = LinkEncoder(graph.num_users, config, self.struct.shape[1], community_labels(graph, config))
        self.model = model.to(self.device)
        self.ddp = None
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)
        dense = [p for name, p in self.model.named_parameters() if not name.startswith("emb.")]
        self.opts = [RowAdam(list(self.model.emb.parameters()), lr=config.lr)]
        if freeze_dense:
            for p in dense:
                p.requires_grad_(False)
        else:
            self.opts.append(torch.optim.Adam(dense, lr=config.lr))
        self.sampler = NeighborSampler(self.graph, config.fanouts)
        # supervision edges: every message-passing edge, or only the given ones (fine-tuning on a delta)
        self.lo, self.hi = self.graph.edge_pairs() if positives is None else (
            np.asarray(positives[0], np.int64), np.asarray(positives[1], np.int64))

    def _batch(self, pos_idx: np.ndarray, rng: np.random.Generator):
        src = self.lo[pos_idx].astype(np.int64)
        dst = self.hi[pos_idx].astype(np.int64)
        k = self.config.negatives
        n_hard = self.config.hard_negatives
        negs = [rng.integers(0, self.graph.num_users, src.size) for _ in range(k - n_hard)]
        negs += [hard_negatives(self.graph, src, rng) for _ in range(n_hard)]
        return src, dst, np.stack(negs, 1) if negs else np.empty((src.size, 0), np.int64)

    def step(self, src, dst, neg, batch_seed: int, exclude=None) -> tuple[float, float]:
        """One optimisation step on this rank's slice. Returns (loss, seconds spent sampling).

        exclude: the positive edges of the whole global batch (default: this slice's).
        """
        t0 = time.perf_counter()
        seeds = np.concatenate([src, dst, neg.ravel()])
        out = self.sampler.sample(seeds, seed=batch_seed, exclude=exclude if exclude is not None else (src, dst))
        t_sample = time.perf_counter() - t0
        seeds_sorted = np.sort(out.node[: out.num_sampled_nodes[0]])
        seed_pos = np.argsort(out.node[: out.num_sampled_nodes[0]])

        dev = self.device

        def li(a):  # global ids -> rows of the sampled subgraph (seeds are its first rows)
            return torch.from_numpy(seed_pos[np.searchsorted(seeds_sorted, a)]).to(dev)
        nodes = torch.from_numpy(out.node).to(dev)
        module = self.ddp or self.model
        h = module(nodes, self.struct[nodes], out.edge_index().to(dev), out.num_sampled_nodes,
                   out.num_sampled_edges)
        hs, hd, hn = h[li(src)], h[li(dst)], h[li(neg)]
        pos = (hs * hd).sum(-1)
        negs = (hs[:, None, :] * hn).sum(-1)
        if self.config.loss == "bpr":
            loss = -torch.nn.functional.logsigmoid(pos[:, None] - negs).mean()
        else:
            loss = -(torch.nn.functional.logsigmoid(pos).mean() + torch.nn.functional.logsigmoid(-negs).mean())
        for opt in self.opts:
            opt.zero_grad()
        loss.backward()
        for opt in self.opts:
            opt.step()
        self.result.sampled_nodes += out.node.size
        self.result.max_batch_nodes = max(self.result.max_batch_nodes, out.node.size)
        return float(loss.detach()), t_sample

    def fit(self, *, progress: bool = True, log=print) -> TrainResult:
        from tqdm import tqdm

        c = self.config
        self.result = TrainResult()
        per_pos = 2 + c.negatives
        global_pos = max(1, c.batch // per_pos) * self.world  # each rank: batch seed nodes
        m = self.lo.size
        best_state = None
        bad = 0
        for epoch in range(c.epochs):
            rng = np.random.default_rng([c.seed, epoch])
            order = rng.permutation(m)
            steps = -(-m // global_pos)
            if c.max_steps_per_epoch:
                steps = min(steps, c.max_steps_per_epoch)
            losses = []
            t_epoch = time.perf_counter()
            bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{c.epochs}", leave=False,
                       disable=None if progress and self.rank == 0 else True, mininterval=2.0)
            for s in bar:
                pos = order[s * global_pos:(s + 1) * global_pos]
                src, dst, neg = self._batch(pos, np.random.default_rng([c.seed, epoch, s]))
                part = slice(self.rank * len(src) // self.world, (self.rank + 1) * len(src) // self.world)
                t = time.perf_counter()
                loss, t_sample = self.step(src[part], dst[part], neg[part], batch_seed=c.seed * 1_000_003 + s,
                                           exclude=(src, dst))
                self.result.step_seconds += time.perf_counter() - t
                self.result.sample_seconds += t_sample
                self.result.steps += 1
                losses.append(loss)
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            val = self.validate()
            epoch_loss = float(np.mean(losses))
            if self.world > 1:  # the global batch's loss: the mean of the ranks' slice losses
                import torch.distributed as dist

                t = torch.tensor([epoch_loss], dtype=torch.float64, device=self.device)
                dist.all_reduce(t)
                epoch_loss = float(t[0]) / self.world
            rec = {"epoch": epoch + 1, "loss": epoch_loss, "val_recall": val,
                   "seconds": round(time.perf_counter() - t_epoch, 2)}
            self.result.history.append(rec)
            if self.rank == 0:
                log(f"epoch {epoch + 1}: loss {rec['loss']:.4f}  val recall@{c.val_k} {val:.4f}  ({rec['seconds']}s)")
            if self.val_lo.size == 0:
                continue  # no validation edges (val_fraction = 0): every epoch runs, the last weights stay
            if val > self.result.best_val:
                self.result.best_val, self.result.best_epoch, bad = val, epoch + 1, 0
                best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            else:
                bad += 1
                if bad >= c.patience:
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        return self.result

    @torch.no_grad()
    def validate(self, max_users: int = 1000) -> float:
        """Recall@val_k of validation edges by exact search over full-graph embeddings (train friends excluded)."""
        from pymk.candidates.embedding import exact_search
        from pymk.eval.metrics import hit_matrix, micro_recall

        if self.val_lo.size == 0:
            return 0.0
        emb = infer(self.model, self.graph, self.struct)
        users, inv = np.unique(np.concatenate([self.val_lo, self.val_hi]), return_inverse=True)
        partners = np.concatenate([self.val_hi, self.val_lo])
        rng = np.random.default_rng(0)
        pick = np.sort(rng.choice(users.size, min(max_users, users.size), replace=False))
        _, top = exact_search(emb, users[pick], self.config.val_k, self.graph)
        # truth of the picked users as CSR rows (one sort, not a scan of every edge per user)
        row_of = np.full(users.size, -1, np.int64)
        row_of[pick] = np.arange(pick.size)
        rows = row_of[inv]
        keep = rows >= 0
        order = np.argsort(rows[keep], kind="stable")
        truth_idx = partners[keep][order]
        truth_ptr = np.zeros(pick.size + 1, np.int64)
        np.cumsum(np.bincount(rows[keep], minlength=pick.size), out=truth_ptr[1:])
        hits = hit_matrix(top, pick.size, truth_ptr, truth_idx, self.graph.num_users)
        return micro_recall(hits, np.diff(truth_ptr))


@torch.no_grad()
def infer(model: LinkEncoder, graph: CSRGraph, struct: torch.Tensor, chunk: int = 8192, *,
          keep_states: bool = False, executor=None):
    """Embeddings of every user, layer by layer over full neighbourhoods (no sampling), in chunks, on the
    model's device.

    keep_states: also return the hidden layers' outputs (what the streaming refresh updates in place).
    executor: run each layer's chunks as tasks (`pymk.pipeline.executor`, e.g. Ray tasks on the cluster: the
        previous layer's output and the CSR are shared through the object store); default: this process.
        Same arithmetic per row either way.
    Shapes: struct (n, s) -> (n, d) float32; with keep_states, (emb, [h_1 .. h_{L-1}] each (n, d)).
    """
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    n = graph.num_users
    struct = struct.to(dev)
    indptr = np.asarray(graph.indptr, np.int64)
    # a copy (mmapped snapshots are read-only), on the device
    indices_np = np.array(graph.indices, np.int64)
    indices = torch.from_numpy(indices_np).to(dev)
    x0 = x = torch.cat([model.features(torch.arange(s, min(n, s + chunk), device=dev), struct[s:s + chunk])
                        for s in range(0, n, chunk)]) if n else torch.empty(0, model.config.dim, device=dev)
    states = []
    from pymk.pipeline.executor import remote

    elsewhere = remote(executor) and dev.type == "cpu"
    for i in range(len(model.convs)):
        if i:
            states.append(x.cpu().numpy())
        if elsewhere:
            shared = {"config": model.config.to_dict(), "state": _layer_state(model), "layer": i,
                      "x": x.numpy(), "indptr": indptr, "indices": indices_np}
            parts = executor.map(_layer_rows_task, [(s, min(n, s + chunk)) for s in range(0, n, chunk)],
                                 shared=shared)
            x = torch.from_numpy(np.concatenate(parts)) if parts else torch.empty(0, model.config.dim)
            continue
        out = torch.empty(n, model.config.dim, device=dev)
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            out[s:e] = _layer_rows(model, i, x, indptr, indices_np, indices, s, e)
        x = out
    if model.config.skip:
        x = x + x0
    model.train(was_training)
    emb = x.cpu().numpy().astype(np.float32)
    return (emb, states) if keep_states else emb


def _layer_rows(model: LinkEncoder, i: int, x: torch.Tensor, indptr: np.ndarray, indices_np: np.ndarray,
                indices: torch.Tensor, s: int, e: int) -> torch.Tensor:
    """Rows s..e-1 of layer i's output from the previous layer's output x over full neighbourhoods.
    Shapes: x (n, d) -> (e - s, d)."""
    dev = x.device
    a, b = int(indptr[s]), int(indptr[e])
    # mean aggregators on the CPU: one CSR x dense product per chunk, without materialising (E, d) messages
    if model.mean_aggregating and dev.type == "cpu":
        mean = neighbour_mean(indptr[s:e + 1] - a, indices_np[a:b], x)
        return model.conv_from_mean(i, mean, x[s:e])
    counts = torch.from_numpy(np.diff(indptr[s:e + 1])).to(dev)
    src = indices[a:b]
    dst = torch.repeat_interleave(torch.arange(e - s, device=dev), counts)
    return model.layer(i, x, x[s:e], torch.stack([src, dst]))


def _layer_state(model: LinkEncoder) -> dict:
    """The weights a layer task needs (the convolutions and norms: no id embedding)."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items() if k.startswith(("convs.", "norms."))}


@torch.no_grad()
def _layer_rows_task(shared: dict, item: tuple[int, int]) -> np.ndarray:
    """One chunk of one layer, as an executor task (module level: a Ray task runs it)."""
    import warnings

    model = LinkEncoder(1, GnnConfig.from_dict(shared["config"])).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in shared["state"].items()}, strict=False)
    with warnings.catch_warnings():  # the object store's arrays are read-only; nothing here writes them
        warnings.simplefilter("ignore", UserWarning)
        x = torch.from_numpy(shared["x"])
        indices = torch.from_numpy(shared["indices"])
    s, e = item
    return _layer_rows(model, shared["layer"], x, shared["indptr"], shared["indices"], indices, s, e).numpy()


def cpu_state_dict(model: torch.nn.Module) -> dict:
    """The model's weights on the CPU, so a checkpoint trained on a GPU loads anywhere."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def save_checkpoint(path: str | Path, model: LinkEncoder, graph: CSRGraph, result: TrainResult | None) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(cpu_state_dict(model), path / "model.pt")
    meta = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "pymk_version": __version__,
            "config": model.config.to_dict(), "num_users": graph.num_users, "n_struct": model.struct.in_features,
            "history": result.history if result else [], "best_epoch": result.best_epoch if result else None}
    (path / "checkpoint.json").write_text(json.dumps(meta, indent=2))


def load_checkpoint(path: str | Path, graph: CSRGraph) -> LinkEncoder:
    """Rebuilds the model from its stored config; refuses another format or user count."""
    from pymk.artifacts import read_artifact_meta

    meta_path, meta = read_artifact_meta(path, "checkpoint.json", CHECKPOINT_FORMAT, CHECKPOINT_VERSION,
                                         CheckpointError, what="GNN checkpoint", fix="retrain with `pymk train`")
    if meta["num_users"] != graph.num_users:
        raise CheckpointError(f"{meta_path}: trained on {meta['num_users']} users, the graph has "
                              f"{graph.num_users}")
    model = LinkEncoder(graph.num_users, GnnConfig.from_dict(meta["config"]), meta.get("n_struct", 1))
    model.load_state_dict(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
    return model
