"""`pymk build`: edge list -> model directory, running every stage the configuration enables.

Stages (each writes a named artifact under the model dir):
    graph    ingest + normalise + CSR snapshot        -> DIR/graph/
    shards   partition + replica plan (shards > 1)    -> DIR/graph/partition.npy, shards.json, shards/<s>/, ...
    gnn      GNN embeddings (gnn.enabled)              -> DIR/gnn/
    ann      ANN index over the embeddings             -> DIR/ann/
    ranker   feature table + LightGBM ranker            -> DIR/features/, DIR/ranker/
    model    config, versions, stage summaries         -> DIR/model.json
The directory is assembled beside its final place and moved in at the end, so a failed build never
leaves a half-written model where a good one was.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pymk import __version__
from pymk.config import PymkConfig
from pymk.graph.edges import EdgeList, IngestReport, normalize_edges
from pymk.graph.ingest import read_edges
from pymk.graph.snapshot import CSRGraph
from pymk.pipeline.memory import trim_heap
from pymk.pipeline.model import MODEL_FORMAT, MODEL_FORMAT_VERSION, write_model_meta

Log = Callable[[str], None]


def ingest(edges_path: str | os.PathLike, *, skip_bad_rows: bool = False, show_progress: bool = True,
           log: Log = print, executor=None) -> tuple[EdgeList, IngestReport]:
    """Reads and normalises an edge file with a progress bar over its bytes; logs the summary. With a remote
    executor (Ray) the file is parsed in chunks by its tasks (`pymk.graph.chunked`: the same result)."""
    from tqdm import tqdm

    from pymk.pipeline.executor import remote

    path = Path(edges_path)
    if remote(executor):
        from pymk.graph.chunked import read_edges_chunked

        t0 = time.perf_counter()
        raw = read_edges_chunked(path, executor, skip_bad_rows=skip_bad_rows)
        log(f"read {path.name} in chunks on the {executor.kind} executor ({time.perf_counter() - t0:.1f}s)")
    else:
        total = path.stat().st_size if path.exists() else None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"reading {path.name}", disable=not show_progress,
                  leave=False) as bar:
            # gzip: bytes read are uncompressed, so the bar tracks compressed size only roughly
            raw = read_edges(path, skip_bad_rows=skip_bad_rows,
                             progress=lambda n: bar.update(min(n, max(0, (bar.total or n) - bar.n))))
    edges, report = normalize_edges(raw, release=True)
    log(report.summary())
    return edges, report


def build(edges_path: str | os.PathLike, out: str | os.PathLike, config: PymkConfig | None = None, *,
          skip_bad_rows: bool = False, show_progress: bool = True, log: Log = print,
          events: str | os.PathLike | None = None, executor=None) -> Path:
    """Runs every enabled offline stage on an edge file into the model directory `out`; `events`: an event
    log (a served model's DIR/stream/events.log) folded in first, so erased users are left out."""
    config = config or PymkConfig()
    edges, report = ingest(edges_path, skip_bad_rows=skip_bad_rows, show_progress=show_progress, log=log,
                           executor=executor)
    standing = None
    if events is not None:
        from pymk.pipeline.changes import fold_with_standing
        from pymk.stream.log import FileEventLog

        path = Path(events)
        if not path.exists():
            raise FileNotFoundError(f"event log {path} does not exist")
        evs, _ = FileEventLog(path).read(None, count=1 << 62)
        edges, _, standing = fold_with_standing(edges, evs, log=log)
    held = [edges]
    del edges  # the build drops the edge list once the graph is made
    return _build(held, out, config, report=report, log=log, executor=executor, standing=standing)


@contextmanager
def staged_model(out: Path, verb: str = "building"):
    """A work directory beside `out` that becomes `out` when the block ends without an error (its model.json
    written by `finish_model`), and is removed otherwise: no half model is ever left at `out`."""
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.{verb}-", dir=out.parent))
    try:
        yield work
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def finish_model(work: Path, config: PymkConfig, stages: dict, source: str, executor, **extra) -> dict:
    """Writes a sharded model's per-shard user rows (`pymk.serving.shard_users.write_shard_rows`), then the model
    directory's model.json (format, version, config, stage summaries); returns it."""
    from pymk.serving.shard_users import write_shard_rows

    written = write_shard_rows(work)
    if written:
        stages = {**stages, "shard_rows": written}
    meta = {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "pymk_version": __version__,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "source": source,
            "config": config.to_dict(), "stages": stages, "executor": executor.describe(), **extra}
    write_model_meta(work, meta)
    return meta


def build_from_edges(edges: EdgeList, out: str | os.PathLike, config: PymkConfig | None = None, *,
                     report: IngestReport | None = None, log: Log = print, executor=None) -> Path:
    """The stages after ingestion, on already-normalised edges (also used by `pymk eval`). `executor`: where
    the chunked stages run (`pymk.pipeline.executor`; default: this process); the model is the same."""
    return _build([edges], out, config, report=report, log=log, executor=executor)


def _build(held: list, out, config, *, report, log: Log, executor, standing=None) -> Path:
    """`build_from_edges` on `held[0]`, which it takes out of the list: when the caller holds no other
    reference, the edge list is freed once the graph is made, and the later stages read the graph's
    snapshot memory-mapped (nothing of the whole graph is held twice)."""
    from pymk.pipeline.executor import LocalExecutor

    executor = executor or LocalExecutor()
    config = config or PymkConfig()
    config.validate()
    out = Path(out)
    with staged_model(out) as work:
        t0 = time.perf_counter()
        source = report.source if report else "in-memory edges"
        graph = CSRGraph.from_edges(held.pop(), meta={"source": source,
                                                      "ingest": report.to_dict() if report else None})
        graph.save(work / "graph")
        if standing is not None and len(standing):  # what the folded event log remembers beside the graph
            standing.save(work)
        graph = CSRGraph.load(work / "graph")  # memory-mapped: its pages are the page cache's, not ours
        trim_heap()  # ingestion's and the CSR's working arrays are gone
        stages = {"graph": {"users": graph.num_users, "edges": graph.num_edges,
                            "seconds": round(time.perf_counter() - t0, 3)}}
        log(f"stage graph: {graph.num_users:,} users, {graph.num_edges:,} edges "
            f"({stages['graph']['seconds']:.1f}s)")
        if config.sharding.shards > 1:
            stages["shards"] = _shard_stage(graph, work / "graph", config, log)
        if config.candidates.fof.score == "auto":  # before the ranker, whose lists Stage 1 makes
            from pymk.candidates.order import choose_fof_order

            config = copy.deepcopy(config)  # the model's config records the order chosen
            config.candidates.fof.score, stages["stage1"] = choose_fof_order(graph, config, log=log)
        gnn_train = None
        if config.gnn.enabled:
            from pymk.gnn.stage import train_embeddings

            if config.ranker.kind in ("lightgbm", "auto"):
                # one GNN for both: its weights never see the ranker's held-out edges (trained on the
                # internal G'), the ranker's rows embed G' and serving embeds G with the same weights
                from pymk.ranking.learned import internal_graph

                gnn_train = internal_graph(graph, config, 0)[0]
            emb, stages["gnn"] = train_embeddings(graph if gnn_train is None else gnn_train, config.gnn,
                                                  work / "gnn", infer_graph=graph, log=log,
                                                  workers=config.gnn.workers, ray=executor.kind == "ray")
            on = "the ranker's internal split" if gnn_train is not None else "the graph"
            log(f"stage gnn: {config.gnn.kind} {config.gnn.dim}-d embeddings trained on {on} "
                f"({stages['gnn']['train_edges']:,} edges), best val recall@{config.gnn.val_k} "
                f"{stages['gnn']['val_recall']:.3f} ({stages['gnn']['seconds']:.1f}s)")
            stages["ann"] = ann_stage(emb, work, config, log, executor=executor)
        else:
            emb = None
        if config.ranker.kind in ("lightgbm", "auto"):
            stages["ranker"] = ranker_stage(graph, emb, work, config, log, gnn_train=gnn_train, executor=executor)
        finish_model(work, config, stages, source, executor)
    log(f"model written to {out}")
    return out


def ann_stage(emb, model_dir: Path, config: PymkConfig, log: Log, executor=None) -> dict:
    """Indexes the embeddings under model_dir/ann/, sharded like the graph when it is (each shard's index
    built by a task of `executor`)."""
    from pymk.candidates.ann import build_ann
    from pymk.graph.sharded import load_plan

    plan = load_plan(model_dir / "graph") if config.sharding.shards > 1 else None
    summary = build_ann(emb, config.candidates.ann, model_dir / "ann", shard_of=None if plan is None else plan.home,
                        depth=config.candidates.k, log=log, executor=executor)
    at = ", ".join(f"{k} {v:.3f}" for k, v in summary["recall_at"].items()) or "exact"
    log(f"stage ann: {summary['kind']} index over {summary['users']:,} users in {summary['shards']} shard(s), "
        f"search parameter {summary['search_param']}, recall vs exact {at} ({summary['seconds']:.1f}s)")
    return summary


def ranker_stage(graph: CSRGraph, emb, model_dir: Path, config: PymkConfig, log: Log, *,
                 gnn_train: CSRGraph | None = None, executor=None) -> dict:
    """Trains the learned ranker on an internal split (pymk.ranking.learned) and stores the serving
    feature table (features of the full graph).

    gnn_train: the graph the model's GNN checkpoint (model_dir/gnn) was trained on; a split whose G' it
    is embeds with those weights, any other split trains a GNN of its own."""
    from pymk.features.store import InProcessFeatureStore
    from pymk.ranking.learned import LearnedRanker, RankerError, train_ranker, training_data

    t0 = time.perf_counter()
    embeddings_fn = None
    if config.gnn.enabled:  # embedding features for training come from a GNN that never saw the labels
        from pymk.gnn.stage import embed, train_embeddings

        def embeddings_fn(sub):
            if gnn_train is not None and _same_edges(sub, gnn_train):
                return embed(model_dir / "gnn", sub)
            return train_embeddings(sub, config.gnn, None, progress=False, log=lambda s: None)[0]

    try:
        data = training_data(graph, config, embeddings_fn=embeddings_fn, log=log, executor=executor)
        booster, summary = train_ranker(data, config, log=log)
    except RankerError as exc:
        if config.ranker.kind != "auto":
            raise
        log(f"stage ranker: {exc}; serving adamic_adar")
        return {"chosen": "adamic_adar", "skipped": str(exc), "seconds": round(time.perf_counter() - t0, 2)}
    store = InProcessFeatureStore.of_graph(graph, emb)
    store.save(model_dir / "features")
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    LearnedRanker(booster, graph, store).save(model_dir / "ranker", {"summary": summary,
                                                                     "config": config.to_dict()["ranker"]})
    top = ", ".join(f"{k} {v:.2f}" for k, v in list(summary["importance"].items())[:4])
    log(f"stage ranker: lightgbm {summary['objective']}, validation recall@20 "
        f"{summary['validation_recall@20'][summary['objective']]:.4f}, top features {top}; serving "
        f"{summary['chosen'] if config.ranker.kind == 'auto' else 'lightgbm'} ({summary['seconds']:.1f}s)")
    return summary


def _same_edges(a: CSRGraph, b: CSRGraph) -> bool:
    return a.num_users == b.num_users and np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices,
                                                                                              b.indices)


def _shard_stage(graph: CSRGraph, snapshot_dir: Path, config: PymkConfig, log: Log) -> dict:
    """Partitions users, plans replicas, stores the plan and each shard's own snapshot (what its shard server
    maps: `graph/shards/<s>/`) beside the graph's, reports locality."""
    from pymk.graph.locality import locality_report
    from pymk.graph.partition import partition, plan_replicas
    from pymk.graph.shard_graph import save_shards
    from pymk.graph.sharded import save_plan

    t0 = time.perf_counter()
    sc = config.sharding
    home = partition(graph, sc.shards, sc.method, balance=sc.balance)
    plan = plan_replicas(graph, home, sc.shards, sc.method, sc.replication)
    save_plan(snapshot_dir, plan, budget=sc.replication)
    entries = save_shards(graph, plan, snapshot_dir)
    report = locality_report(graph, plan).to_dict()
    report["shard_entries"] = entries
    report["seconds"] = round(time.perf_counter() - t0, 3)
    log(f"stage shards: {sc.shards} {sc.method} shards, two-hop locality {report['two_hop_locality']:.3f}, "
        f"balance {report['balance']:.3f}, replication {report['replication_overhead']:.3f} "
        f"({report['seconds']:.1f}s)")
    return report


def _check_replaceable(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "model.json").exists())):
        raise FileExistsError(f"{out} exists and is not a pymk model directory; refusing to overwrite it")
