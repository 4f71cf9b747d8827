"""`pymk update`: the next model version from the previous one plus the events since (the brief's daily
incremental update, instead of a full rebuild).

    version N (DIR) + event log (friendships added and removed, new users, erasures)  ->  version N+1 (OUT)

Stages, each against what a full `pymk build` of the same graph would do:
    graph    N's snapshot with the events folded in (`fold_with_standing`: new users in, erased users out
             entirely); dense indices are re-sorted by id, `remap` carries N's users to N+1's; what the
             snapshot does not show (erased ids, unfriended pairs, blocks, dismissals) carried to N+1's
             standing.npz (`pymk.pipeline.standing`)
    shards   partitioned again (a sharded model), each shard's own snapshot written
    gnn      (a model with one) N's checkpoint carried over (its id-embedding rows remapped; a new user's row
             is the mean of its friends' rows), its id rows fine-tuned on the added friendships only (N's
             layers kept, so refreshed and kept vectors share one space); embeddings
             recomputed for the users whose staleness (new neighbours since N / degree) passes
             `update.staleness` and for new users, N's vectors kept for everyone else
    ann      N's index updated in place: erased users removed, labels renamed to N+1's dense indices, the
             refreshed and new users' vectors replaced (no retraining of IVF cells, no HNSW rebuild);
             calibrated again, starting from N's search setting
    ranker   N's ranker kept (its features are the same functions of the new graph; the user-feature table
             is recomputed), unless `retrain_ranker`
Every artifact's model.json records the version it came from (`updated_from`), the lineage it continues and
how far into the event log it folded (`events.through`, `pymk.pipeline.lineage`): the next update given the
same (grown) log folds only what came after, and a service swapping to N+1 replays the log from there.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np

from pymk.graph.edges import EdgeList
from pymk.graph.snapshot import CSRGraph
from pymk.pipeline.lineage import check_log_lineage, lineage, log_name, start_position, stream_key
from pymk.pipeline.model import ModelError, model_version, read_model_meta

STALENESS = 0.05  # the brief's refresh threshold: new neighbours / degree
STALENESS_BINS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, np.inf)  # the update's staleness histogram


def snapshot_edges(g: CSRGraph) -> EdgeList:
    """A snapshot's friendships as an EdgeList (timestamps kept)."""
    lo, hi, ts = g.edge_pairs(with_ts=True)
    return EdgeList(np.asarray(g.ids), lo.astype(g.indices.dtype), hi.astype(g.indices.dtype), ts)


def _remap(old: CSRGraph, new: CSRGraph) -> np.ndarray:
    """(n_old,) N+1's dense index of each of N's users (-1: erased)."""
    old_ids = np.asarray(old.ids)
    pos = np.searchsorted(new.ids, old_ids)
    pos_c = np.minimum(pos, new.num_users - 1)
    return np.where((pos < new.num_users) & (np.asarray(new.ids)[pos_c] == old_ids), pos_c, -1).astype(np.int64)


def _added_pairs(old: CSRGraph, new: CSRGraph, remap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Friendships of N+1 that N did not have (dense N+1 indices, lo < hi). Both key lists come out sorted
    (edge_pairs orders by (lo, hi) and `remap` is increasing), so one binary search per edge finds them."""
    n = np.int64(new.num_users)
    lo, hi = new.edge_pairs()
    now = lo.astype(np.int64) * n + hi
    a, b = old.edge_pairs()
    ra, rb = remap[a], remap[b]
    keep = (ra >= 0) & (rb >= 0)
    before = ra[keep] * n + rb[keep]
    if before.size:
        pos = np.minimum(np.searchsorted(before, now), before.size - 1)
        added = now[before[pos] != now]
    else:
        added = now
    return added // n, added % n


def _gnn_stage(prev: Path, old: CSRGraph, graph: CSRGraph, remap: np.ndarray, added, work: Path, epochs: int,
               staleness: float, log) -> tuple[np.ndarray, dict]:
    """N's GNN carried to N+1: id rows remapped, fine-tuned on the added friendships, stale users re-embedded."""
    import torch

    from pymk.gnn.config import GnnConfig
    from pymk.gnn.model import LinkEncoder, input_features
    from pymk.gnn.train import Trainer, infer, load_checkpoint, save_checkpoint

    t0 = time.perf_counter()
    before = load_checkpoint(prev / "gnn", old)
    gcfg: GnnConfig = before.config
    model = LinkEncoder(graph.num_users, gcfg, before.struct.in_features)
    state = before.state_dict()
    w_old = state["emb.weight"]
    w = torch.zeros((graph.num_users, w_old.shape[1]), dtype=w_old.dtype)
    kept = remap >= 0
    w[torch.from_numpy(remap[kept])] = w_old[torch.from_numpy(np.flatnonzero(kept))]
    new_users = np.setdiff1d(np.arange(graph.num_users), remap[kept])
    for u in new_users.tolist():  # inductive start: the mean of its friends' rows (known friends only)
        f = np.asarray(graph.neighbors(u), np.int64)
        f = f[~np.isin(f, new_users)]
        if f.size:
            w[u] = w[torch.from_numpy(f)].mean(0)
    state["emb.weight"] = w
    model.load_state_dict(state)
    lo, hi = added
    result = None
    if lo.size:
        # N's layers stay: the users not re-embedded keep N's vectors, so the refreshed ones must come from
        # the same layers (fine-tuned layers moved the refreshed vectors out of the range N's SQ8 index was
        # trained on: recall vs exact 0.16 at 1M). Only id rows train, on every added friendship, without a
        # validation split (a validation pass is a full inference and an exact search); the last epoch stays.
        gcfg_ft = GnnConfig.from_dict({**gcfg.to_dict(), "epochs": epochs, "val_fraction": 0.0})
        result = Trainer(graph, gcfg_ft, model=model, positives=(lo, hi), freeze_dense=True).fit(
            progress=False, log=lambda s: None)
    save_checkpoint(work / "gnn", model, graph, result)
    emb_all = infer(model, graph, torch.from_numpy(input_features(graph, gcfg)))
    # N's vectors stay for users whose neighbourhood barely moved; the stale and the new get the new ones
    prev_emb = np.load(prev / "gnn" / "embeddings.npy", mmap_mode="r")
    emb = np.empty_like(emb_all)
    emb[remap[kept]] = prev_emb[np.flatnonzero(kept)]
    new_nb = np.bincount(np.concatenate([lo, hi]), minlength=graph.num_users)
    deg = np.maximum(np.asarray(graph.degree), 1)
    stale = new_nb / deg > staleness
    stale[new_users] = True
    emb[stale] = emb_all[stale]
    np.save(work / "gnn" / "embeddings.npy", emb)
    share = new_nb / deg
    share[new_users] = np.inf  # new users: no embedding of their own before this version
    counts, _ = np.histogram(share, bins=STALENESS_BINS)
    summary = {"kind": gcfg.kind, "dim": gcfg.dim, "fine_tuned_on": int(lo.size), "new_users": int(new_users.size),
               "refreshed": int(stale.sum()), "staleness": staleness, "seconds": round(time.perf_counter() - t0, 2),
               # users by new neighbours since N / degree (`pymk report` draws it); the last bin: new users
               "staleness_hist": {"bins": [str(b) for b in STALENESS_BINS], "users": counts.tolist()}}
    log(f"stage gnn: fine-tuned on {lo.size:,} new friendships, {stale.sum():,} embeddings refreshed "
        f"({new_users.size:,} new users; staleness > {staleness:.0%}) ({summary['seconds']:.1f}s)")
    return emb, summary, stale


def _ann_stage(prev: Path, work: Path, emb: np.ndarray, remap: np.ndarray, fresh: np.ndarray, config, log, *,
               recall_n: float | None = None, executor=None) -> dict:
    """N's ANN index carried to N+1 in place: erased users removed, every label renamed to N+1's dense index,
    the users whose vector changed (`fresh`: stale and new) replaced; then calibrated and saved as a build
    does. A sharded index keeps each user on its shard (new users go to their home shard in N+1's plan)."""
    from pymk.candidates.ann import ShardedAnnIndex, calibrate, load_ann, save_ann
    from pymk.graph.sharded import load_plan

    t0 = time.perf_counter()
    acfg = config.candidates.ann
    index = load_ann(prev / "ann", np.load(prev / "gnn" / "embeddings.npy", mmap_mode="r"))
    prev_param = int(index.search_param)
    # what the carried index must reach: the target, or as much as N's own index reached (`recall_n`, N's
    # model.json) when its kind cannot
    need = min(acfg.target_recall, (acfg.target_recall if recall_n is None else recall_n) - 0.01)
    gone = np.flatnonzero(remap < 0)
    index.remove(gone)
    if isinstance(index, ShardedAnnIndex):
        plan = load_plan(work / "graph")
        home = plan.home if plan is not None else np.arange(emb.shape[0]) % len(index.shards)
        index.relabel(remap, home)
    else:
        index.relabel(remap)
    users = np.flatnonzero(fresh)
    index.replace(users, emb[users])
    moved = time.perf_counter() - t0
    cal = calibrate(index, emb, acfg, config.candidates.k, start=prev_param)
    if cal["recall"] < need:
        # N's cells or quantiser no longer fit the vectors (e.g. they moved out of SQ8's trained range): a new
        # index, as a build makes it, rather than one that misses what Stage 1 should find
        from pymk.pipeline.build import ann_stage

        log(f"stage ann: N's index updated in place reaches recall {cal['recall_at']} at most, below {need:.3f} "
            f"(the target, or N's own): built again from N+1's vectors")
        built = ann_stage(emb, work, config, log, executor=executor)
        return {**built, "in_place": {"rejected_recall_at": cal["recall_at"], "seconds": round(moved, 2)},
                "seconds": round(time.perf_counter() - t0, 2)}
    save_ann(index, work / "ann", emb, calibration=cal)
    summary = {"kind": index.kind, "shards": len(getattr(index, "shards", [index])), "users": int(index.ntotal),
               "search_param": cal["param"], "calibrated_recall": cal["recall"], "recall_at": cal["recall_at"],
               "in_place": {"removed": int(gone.size), "replaced": int(users.size), "seconds": round(moved, 2)},
               "seconds": round(time.perf_counter() - t0, 2)}
    at = ", ".join(f"{k} {v:.3f}" for k, v in cal["recall_at"].items()) or "exact"
    log(f"stage ann: N's {index.kind} index updated in place ({gone.size:,} removed, {users.size:,} replaced or "
        f"added, {moved:.1f}s), search parameter {cal['param']}, recall vs exact {at} ({summary['seconds']:.1f}s)")
    return summary


def update(model_dir: str | os.PathLike, events: str | os.PathLike, out: str | os.PathLike, *,
           retrain_ranker: bool = False, staleness: float = STALENESS, epochs: int = 3, executor=None,
           log=print) -> Path:
    """Writes version N+1 of the model at `model_dir` (version N) with the events of `events` folded in.
    `epochs`: fine-tuning epochs over the added friendships (a model with a GNN)."""
    from pymk.config import PymkConfig
    from pymk.pipeline.build import _shard_stage, ann_stage, finish_model, ranker_stage, staged_model
    from pymk.pipeline.changes import fold_with_standing
    from pymk.pipeline.executor import LocalExecutor
    from pymk.pipeline.standing import Standing

    prev, out = Path(model_dir), Path(out)
    if prev.resolve() == out.resolve():
        raise ModelError(f"--out {out} is the model being updated: write version N+1 beside it")
    meta_n = read_model_meta(prev)
    log_n, start = open_events(events, meta_n)
    config = PymkConfig.from_dict(meta_n["config"])
    executor = executor or LocalExecutor()
    t_all = time.perf_counter()
    with staged_model(out, "updating") as work:
        t0 = time.perf_counter()
        old = CSRGraph.load(prev / "graph")
        evs, through = read_events(log_n, start)
        edges, folded, standing = fold_with_standing(snapshot_edges(old), evs, Standing.load(prev), log=log)
        standing.save(work)
        graph = CSRGraph.from_edges(edges, meta={"source": f"{old.meta.get('source')} + {log_name(log_n)}",
                                                 "updated_from": model_version(meta_n)})
        graph.save(work / "graph")
        remap = _remap(old, graph)
        added = _added_pairs(old, graph, remap)
        stages = {"graph": {"users": graph.num_users, "edges": graph.num_edges, **folded,
                            "remembered": {"erased": int(standing.erased.size),
                                           "unfriended": int(standing.unfriended.shape[0]),
                                           "blocked": int(standing.blocked.shape[0]),
                                           "dismissed": int(standing.dismissed.shape[0])},
                            "seconds": round(time.perf_counter() - t0, 3)}}
        log(f"stage graph: {graph.num_users:,} users, {graph.num_edges:,} edges, {added[0].size:,} friendships "
            f"new since {model_version(meta_n)} ({stages['graph']['seconds']:.1f}s)")
        if config.sharding.shards > 1:
            stages["shards"] = _shard_stage(graph, work / "graph", config, log)
        emb = None
        if (prev / "gnn" / "checkpoint.json").exists() and (prev / "gnn" / "embeddings.npy").exists():
            emb, stages["gnn"], fresh = _gnn_stage(prev, old, graph, remap, added, work, epochs, staleness, log)
            if (prev / "ann" / "ann.json").exists():
                stages["ann"] = _ann_stage(prev, work, emb, remap, fresh, config, log, executor=executor,
                                           recall_n=meta_n.get("stages", {}).get("ann", {}).get("calibrated_recall"))
            else:
                stages["ann"] = ann_stage(emb, work, config, log, executor=executor)
        ranker_n = meta_n.get("stages", {}).get("ranker")
        if ranker_n is not None and (retrain_ranker or config.gnn.enabled and emb is None):
            stages["ranker"] = ranker_stage(graph, emb, work, config, log, executor=executor)
        elif ranker_n is not None:
            stages["ranker"] = _keep_ranker(prev, work, graph, emb, ranker_n, log)
        from pymk.serving.auth import keys_path

        if keys_path(prev).exists():  # the service's API keys belong to the deployment: they go with its versions
            keys_path(work).parent.mkdir(exist_ok=True)
            shutil.copy2(keys_path(prev), keys_path(work))
        meta = finish_model(work, config, stages, graph.meta["source"], executor,
                            updated_from=model_version(meta_n), update_seconds=round(time.perf_counter() - t_all, 2),
                            lineage=lineage(meta_n), events={"log": log_name(log_n), "from": start, "through": through})
    log(f"model {model_version(meta)} written to {out} (from {model_version(meta_n)}, "
        f"{time.perf_counter() - t_all:.1f}s)")
    return out


def open_events(events: str | os.PathLike, meta_n: dict):
    """The event log to fold into version N+1 and where to start in it: after N's `events.through` when N
    was itself updated from this log (a deployment's log grows: each update folds what came since), else
    from its start. `events`: a file, or a Redis URL (the lineage's stream there). A file whose header
    names another lineage is refused."""
    from pymk.stream.log import FileEventLog, RedisEventLog

    text = str(events)
    if text.startswith(("redis://", "rediss://", "unix://")):
        import redis

        client = redis.Redis.from_url(text, socket_timeout=30, socket_connect_timeout=5)
        log = RedisEventLog(client, stream_key(lineage(meta_n)))
        if not client.exists(log.key):
            raise ModelError(f"{text} holds no event stream {log.key} for this model's lineage")
    else:
        if not Path(events).exists():
            raise FileNotFoundError(f"event log {events} does not exist")
        log = FileEventLog(Path(events))
        check_log_lineage(log, lineage(meta_n))
    start = start_position(meta_n, log_name(log))
    gap = log.missing_after(start)
    if gap:
        raise ModelError(f"cannot update version {model_version(meta_n)} from {text}: {gap}. The next version "
                         f"would lack changes that were acknowledged: rebuild from the source of truth "
                         f"(`pymk build`)")
    return log, start


def read_events(log, start: str | None, batch: int = 1_000_000) -> tuple[list, str | None]:
    """Every event of `log` after `start`, and the position after the last one."""
    out, pos = [], start
    while True:
        evs, pos = log.read(pos, count=batch)
        if not evs:
            return out, pos
        out.extend(evs)


def _keep_ranker(prev: Path, work: Path, graph: CSRGraph, emb, summary_n: dict, log) -> dict:
    """N's ranker as is (a learned one's booster copied), with the user-feature table of the new graph."""
    from pymk.features.store import InProcessFeatureStore

    t0 = time.perf_counter()
    out = {**summary_n, "kept_from_previous": True}
    if (prev / "ranker").exists():
        shutil.copytree(prev / "ranker", work / "ranker")
        InProcessFeatureStore.of_graph(graph, emb).save(work / "features")
    out["seconds"] = round(time.perf_counter() - t0, 2)
    log(f"stage ranker: kept {summary_n.get('chosen', 'lightgbm')} from the previous version, user features "
        f"recomputed ({out['seconds']:.1f}s)")
    return out
