"""The `pymk` command line. Its commands and file formats are a stable contract (see README.md)."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="pymk: People You May Know recommendations on a social graph.")

BATCH = 2048


def _err(msg: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(code)


def _user_errors():
    from pymk.candidates.ann import AnnError
    from pymk.config import ConfigError
    from pymk.console.names import UserNamesError
    from pymk.gnn.config import CheckpointError, DeviceError
    from pymk.graph.ingest import IngestError
    from pymk.graph.shard_graph import ShardGraphError
    from pymk.graph.shard_store import ShardStoreError
    from pymk.graph.snapshot import SnapshotError
    from pymk.io import UsersFileError
    from pymk.pipeline.executor import ExecutorError
    from pymk.pipeline.model import ModelError
    from pymk.ranking.learned import RankerError
    from pymk.serving.auth import AuthError
    from pymk.serving.embeddings import ColdTierError
    from pymk.serving.shard_users import ShardUsersError

    return (AuthError, ColdTierError, ConfigError, IngestError, SnapshotError, ModelError, UsersFileError,
            ShardStoreError, CheckpointError, DeviceError, AnnError, RankerError, ShardGraphError, ExecutorError,
            FileNotFoundError, FileExistsError, UserNamesError, ShardUsersError)


@app.command()
def synth(
    users: Annotated[int, typer.Option(help="number of users")],
    out: Annotated[Path, typer.Option(help="output edge file (.csv, .csv.gz or .parquet)")],
    avg_degree: Annotated[float, typer.Option(help="mean number of friends")] = 20.0,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same file)")] = 0,
    gamma: Annotated[float, typer.Option(help="degree power-law exponent (lower: heavier tail)")] = 2.5,
    max_degree: Annotated[float, typer.Option(help="cap on a user's expected degree; 0 = sqrt(users * avg-degree) "
                                                   "(raise it for hub-heavy graphs: hubs of thousands)")] = 0.0,
) -> None:
    """Generate a synthetic social graph: power-law degrees, communities, triadic closure, timestamps."""
    from tqdm import tqdm

    from pymk.graph.synth import SynthConfig, generate, write_edges

    t = time.perf_counter()
    with tqdm(total=4, desc="synth", leave=False) as bar:
        if gamma <= 1.0 or max_degree < 0:
            raise typer.BadParameter(f"need --gamma > 1 and --max-degree >= 0, got {gamma}, {max_degree}")
        src, dst, ts = generate(SynthConfig(users, avg_degree, seed, gamma=gamma, max_degree=max_degree),
                                progress=lambda msg: (bar.set_postfix_str(msg), bar.update(1)))
        write_edges(out, src, dst, ts)
    typer.echo(f"wrote {src.size:,} edges among {users:,} users to {out} ({time.perf_counter() - t:.1f}s)")


class Method(StrEnum):
    hash = "hash"
    community = "community"


ExecutorOpt = Annotated[str, typer.Option(help="where the chunked offline stages run: local (this process) | "
                                        "ray (Ray tasks on a local cluster or --ray-address)")]
RayAddressOpt = Annotated[str | None, typer.Option(help="Ray cluster for --executor ray (default: start a local "
                                                  "one)")]


@contextmanager
def _executor(kind: str, address: str | None):
    """The executor of --executor / --ray-address for the command's duration (a Ray it started is stopped)."""
    from pymk.pipeline.executor import make_executor

    ex = make_executor(kind, address=address)
    try:
        yield ex
    finally:
        ex.close()


@app.command()
def build(
    edges: Annotated[Path, typer.Option(help="edge list: CSV, whitespace/SNAP, .gz, or Parquet")],
    out: Annotated[Path, typer.Option(help="model directory to write")],
    config: Annotated[Path | None, typer.Option(help="TOML or JSON config; default: the best pipeline")] = None,
    skip_bad_rows: Annotated[bool, typer.Option(help="skip and count malformed rows instead of failing")] = False,
    shards: Annotated[int | None, typer.Option(min=1, help="shard the graph (overrides sharding.shards)")] = None,
    partition: Annotated[Method | None, typer.Option(help="partition method (overrides sharding.method)")] = None,
    events: Annotated[Path | None, typer.Option(help="event log of a served model (DIR/stream/events.log) to "
                                                "fold in: friendships added and removed, new users, erasures")] = None,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
) -> None:
    """Run every offline stage the configuration enables into a self-describing model directory."""
    from pymk.config import PymkConfig
    from pymk.pipeline.build import build as run_build

    try:
        cfg = PymkConfig.from_file(config)
        if shards is not None:
            cfg.sharding.shards = shards
        if partition is not None:
            cfg.sharding.method = partition.value
        with _executor(executor, ray_address) as ex:
            run_build(edges, out, cfg, skip_bad_rows=skip_bad_rows, events=events, executor=ex)
    except _partition_error() as exc:
        raise _err(str(exc), 2) from None
    except _user_errors() as exc:
        raise _err(str(exc)) from None


@app.command()
def update(
    model: Annotated[Path, typer.Option(help="model directory of version N (from `pymk build` or `pymk update`)")],
    events: Annotated[str, typer.Option(help="the event log of the service that served N: its file (DIR/stream/"
                                        "events.log) or its Redis URL (the lineage's stream there); only what "
                                        "came after N's own cut is folded in")],
    out: Annotated[Path, typer.Option(help="model directory to write (version N+1)")],
    retrain_ranker: Annotated[bool, typer.Option(help="retrain the learned ranker (default: keep N's)")] = False,
    epochs: Annotated[int, typer.Option(min=1, help="GNN fine-tuning epochs over the added friendships")] = 3,
    staleness: Annotated[float, typer.Option(min=0.0, help="re-embed users whose new neighbours / degree "
                                             "exceed this (and new users)")] = 0.05,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
) -> None:
    """The next model version from the previous one plus its events, without a full rebuild: the graph
    merged, the GNN fine-tuned on the delta, stale and new users re-embedded, the ranker kept."""
    from pymk.pipeline.update import update as run_update

    try:
        with _executor(executor, ray_address) as ex:
            run_update(model, events, out, retrain_ranker=retrain_ranker, staleness=staleness, epochs=epochs,
                       executor=ex, log=lambda s: typer.echo(s, err=True))
    except _user_errors() as exc:
        raise _err(str(exc)) from None


def _partition_error():
    from pymk.graph.partition import PartitionError

    return PartitionError


@app.command()
def shard(
    edges: Annotated[Path, typer.Option(help="edge list to partition")],
    shards: Annotated[int, typer.Option(min=1, help="number of shards S")],
    method: Annotated[Method, typer.Option(help="hash | community")] = Method.community,
    replication: Annotated[float, typer.Option(min=0.0, help="replica budget: extra entries / entries")] = 0.25,
    balance: Annotated[float, typer.Option(min=1.0, help="max / mean adjacency entries per shard")] = 1.10,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    skip_bad_rows: Annotated[bool, typer.Option(help="skip and count malformed rows")] = False,
) -> None:
    """Partition a graph and report how well 2-hop traversals stay inside one shard."""
    import json

    from pymk.graph.locality import locality_report
    from pymk.graph.partition import partition as run_partition
    from pymk.graph.partition import plan_replicas
    from pymk.graph.snapshot import CSRGraph
    from pymk.pipeline.build import ingest

    try:
        e, _ = ingest(edges, skip_bad_rows=skip_bad_rows, log=lambda s: typer.echo(s, err=True))
        graph = CSRGraph.from_edges(e)
        home = run_partition(graph, shards, method.value, balance=balance)
    except _partition_error() as exc:
        raise _err(str(exc), 2) from None
    except _user_errors() as exc:
        raise _err(str(exc)) from None
    report = locality_report(graph, plan_replicas(graph, home, shards, method.value, replication))
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())


def _resolve_users(model, users_file: Path, strict: bool):
    from pymk.io import read_user_ids

    ext = read_user_ids(users_file)
    idx = model.index_of(ext)
    unknown = ext[idx < 0]
    for u in unknown[:20]:
        typer.echo(f"warning: user {u} is not in the model; no rows for it", err=True)
    if unknown.size > 20:
        typer.echo(f"warning: {unknown.size - 20} more unknown users", err=True)
    if strict and unknown.size:
        raise _err(f"{unknown.size} unknown users (--strict)", 2)
    return ext[idx >= 0], idx[idx >= 0]


def _batched(model, users_file: Path, strict: bool, desc: str):
    from tqdm import tqdm

    ext, idx = _resolve_users(model, users_file, strict)
    with tqdm(total=idx.size, desc=desc, unit="user", leave=False, disable=idx.size < 10 * BATCH) as bar:
        for s in range(0, idx.size, BATCH):
            yield ext[s:s + BATCH], idx[s:s + BATCH]
            bar.update(min(BATCH, idx.size - s))


def _load(model: Path, live: bool):
    """Opens a model dir; with `live`, applies its event log (DIR/stream/events.log, or the log an updated
    version follows, from its cut: friendships added and removed, new users, erasures, blocks and
    dismissals), as the service does. Returns (model, blocked: dense user -> dense ids never to return, from
    the blocks and dismissals the version carries and, with `live`, the log's)."""
    from pymk.pipeline.lineage import file_log_path, log_name, start_position
    from pymk.pipeline.model import Model
    from pymk.stream.log import FileEventLog

    m = Model.load(model)
    blocked: dict[int, set[int]] = {}

    def note(actions):
        for op, src, dst in actions:
            a, b = m.index_of([src, dst]).tolist()
            if a >= 0 and b >= 0:
                blocked.setdefault(a, set()).add(b)
                if op == "block":
                    blocked.setdefault(b, set()).add(a)

    note(("block" if kind == "blocked" else "dismiss", a, b) for kind, a, b in m.standing.actions())
    path = file_log_path(model, m.meta)
    if not path.exists() or path.stat().st_size == 0:
        return m, blocked
    log = FileEventLog(path)
    events, _ = log.read(start_position(m.meta, log_name(log)), count=1 << 62)
    if not live:
        if events:
            typer.echo(f"warning: {path} holds {len(events):,} live events that this answer ignores (the build's "
                       "graph); --live applies them", err=True)
        return m, blocked
    note(m.apply(events).actions)
    typer.echo(f"applied {len(events):,} live events from {path}", err=True)
    return m, blocked


def _blocked_for(blocked: dict, idx: np.ndarray):
    if not blocked:
        return None
    return [np.fromiter(blocked.get(u, ()), np.int64) for u in idx.tolist()]


LiveOpt = Annotated[bool, typer.Option("--live/--no-live", help="apply the model's event log (DIR/stream/"
                                       "events.log) first, as the service does; without it, warn if it has events")]


@app.command()
def recommend(
    model: Annotated[Path, typer.Option(help="model directory from `pymk build`")],
    users: Annotated[Path, typer.Option(help="file with one user id per line")],
    out: Annotated[Path, typer.Option(help="CSV to write")],
    k: Annotated[int, typer.Option(min=1, help="recommendations per user")] = 20,
    strict: Annotated[bool, typer.Option(help="exit 2 if any user is unknown to the model")] = False,
    live: LiveOpt = False,
) -> None:
    """Top-k recommendations per user: user_id,candidate_id,rank,score,mutual_friends,source,mutual_sample.

    Runs the service's recommend path (`pymk.serving.batch`: stage1 -> features -> rank -> filter -> explain)
    over batches of users, so each row equals what `GET /v1/users/{id}/recommendations` answers."""
    from pymk.io import RECOMMEND_HEADER, CsvRowWriter
    from pymk.ranking.explain import format_sample
    from pymk.serving import batch

    try:
        m, blocked = _load(model, live)
        writer = CsvRowWriter(out, RECOMMEND_HEADER)
        for ext, idx in _batched(m, users, strict, "recommend"):
            a = batch.recommend(m, idx, k, excluded=_blocked_for(blocked, idx))
            keep = np.arange(a.cand.shape[1])[None, :] < a.count[:, None]
            writer.write(ext, m.graph.ids[np.maximum(a.cand, 0)], a.count, a.source, a.score, a.mutual,
                         format_sample(m.graph.ids, a.sample[keep]))
        writer.close()
    except _user_errors() as exc:
        raise _err(str(exc)) from None
    typer.echo(f"wrote {writer.rows:,} rows to {out}", err=True)


class Source(StrEnum):
    stage1 = "stage1"
    fof = "fof"
    ppr = "ppr"
    embedding = "embedding"


@app.command()
def candidates(
    model: Annotated[Path, typer.Option(help="model directory from `pymk build`")],
    users: Annotated[Path, typer.Option(help="file with one user id per line")],
    out: Annotated[Path, typer.Option(help="CSV to write")],
    k: Annotated[int, typer.Option(min=1, help="Stage-1 candidates per user")] = 1000,
    strict: Annotated[bool, typer.Option(help="exit 2 if any user is unknown to the model")] = False,
    source: Annotated[Source, typer.Option(help="stage1 (merged sources) | one source alone: fof | ppr | "
                                                "embedding (ANN index over the GNN embeddings)")] = Source.stage1,
    live: LiveOpt = False,
) -> None:
    """Stage-1 candidates only: user_id,candidate_id,rank,source."""
    from pymk.candidates.base import SOURCE_EMBEDDING
    from pymk.io import CANDIDATES_HEADER, CsvRowWriter

    try:
        m, blocked = _load(model, live)
        writer = CsvRowWriter(out, CANDIDATES_HEADER)
        for ext, idx in _batched(m, users, strict, "candidates"):
            if source == Source.embedding:
                _, top = m.embedding_candidates(idx, k)
                count = (top >= 0).sum(1)
                src = np.full(top.shape, SOURCE_EMBEDDING, np.uint8)
                writer.write(ext, m.graph.ids[np.maximum(top, 0)], count, src)
            else:
                only = None if source == Source.stage1 else (str(source),)
                c = m.stage1.generate(idx, k=k, sources=only, blocked=_blocked_for(blocked, idx))
                writer.write(ext, m.graph.ids[np.maximum(c.cand, 0)], c.count, c.source)
        writer.close()
    except _user_errors() as exc:
        raise _err(str(exc)) from None
    typer.echo(f"wrote {writer.rows:,} rows to {out}", err=True)


@app.command("eval")
def eval_cmd(
    edges: Annotated[Path, typer.Option(help="edge list to split and evaluate on")],
    config: Annotated[Path | None, typer.Option(help="config for pymk's row (default: the best pipeline)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the report as JSON here")] = None,
    skip_bad_rows: Annotated[bool, typer.Option(help="skip and count malformed rows")] = False,
    gnn: Annotated[bool, typer.Option("--gnn", help="also train the GNN and add its row")] = False,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    report_out: Annotated[Path | None, typer.Option("--report", help="also write the HTML report (plots) here")] = None,
) -> None:
    """The shared evaluation protocol: CN, AA, RA and pymk side by side, Stage-1 recall, 2-hop ceiling."""
    from pymk.config import PymkConfig
    from pymk.eval.runner import evaluate
    from pymk.pipeline.build import ingest

    try:
        cfg = PymkConfig.from_file(config)
        if gnn:
            cfg.gnn.enabled = True
        with _executor(executor, ray_address) as ex:
            e, _ = ingest(edges, skip_bad_rows=skip_bad_rows, log=lambda s: typer.echo(s, err=True), executor=ex)
            report = evaluate(e, dataset=edges.name, config=cfg, executor=ex)
    except _user_errors() as exc:
        raise _err(str(exc)) from None
    typer.echo(report.table())
    typer.echo(report.to_json())
    if json_out:
        json_out.write_text(report.to_json())
    if report_out:
        import json

        from pymk.eval.report import write_report

        typer.echo(f"report: {write_report(report_out, evaluation=json.loads(report.to_json()))}")


@app.command("report")
def report_cmd(
    out: Annotated[Path, typer.Option(help="the HTML file to write (self-contained: plots inlined)")],
    model: Annotated[Path | None, typer.Option(help="model directory: its card, shard locality, staleness")] = None,
    eval_json: Annotated[Path | None, typer.Option("--eval", help="`pymk eval --json` output (default: "
                                                    "MODEL/eval.json if there)")] = None,
    bench: Annotated[Path | None, typer.Option(help="`benchmarks/bench_serve.py --json` output: latency per "
                                               "request step")] = None,
    locality_shards: Annotated[str, typer.Option(help="shard counts the locality plot partitions the model's graph "
                                                 "into, hash and community ('' for none)")] = "4,8,16",
) -> None:
    """An HTML report with plots: Stage-1 recall by depth per source, Recall@K against CN/AA/RA, latency per
    request step, shard locality, embedding staleness (each where its input is given)."""
    from pymk.eval.report import ReportError, read_json, write_report

    if model is None and eval_json is None and bench is None:
        raise _err("nothing to report: give --model, --eval or --bench")
    try:
        counts = tuple(int(x) for x in locality_shards.split(",") if x.strip())
    except ValueError:
        raise _err(f"--locality-shards: shard counts separated by commas, got {locality_shards!r}") from None
    try:
        path = write_report(out, model_dir=model, evaluation=read_json(eval_json, "evaluation JSON"),
                            bench=read_json(bench, "serving benchmark JSON"), locality_shards=counts)
    except (ReportError, *_user_errors()) as exc:
        raise _err(str(exc)) from None
    typer.echo(f"wrote {path}")


@app.command()
def train(
    model: Annotated[Path, typer.Option(help="model directory from `pymk build`")],
    workers: Annotated[int, typer.Option(min=1, help="data-parallel workers (torch.distributed; Ray Train workers "
                                         "with --executor ray)")] = 1,
    config: Annotated[Path | None, typer.Option(help="TOML/JSON config whose [gnn] section to use")] = None,
    from_checkpoint: Annotated[bool, typer.Option(help="fine-tune the model's checkpoint instead")] = False,
    epochs: Annotated[int | None, typer.Option(min=1, help="override gnn.epochs")] = None,
    delta: Annotated[Path | None, typer.Option(help="new edges: add them to the graph and fine-tune on them")] = None,
    device: Annotated[str | None, typer.Option(help="override gnn.device: auto | cpu | cuda | cuda:N")] = None,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
) -> None:
    """Train (or fine-tune) GNN embeddings on a model's graph; writes DIR/gnn/ and updates model.json."""
    import json

    from pymk.config import PymkConfig
    from pymk.gnn.stage import train_embeddings
    from pymk.pipeline.model import Model, ModelError

    try:
        m = Model.load(model)
        cfg = PymkConfig.from_file(config).gnn if config else m.config.gnn
        if epochs:
            cfg.epochs = epochs
        if device is not None:
            cfg.device = device
            try:
                cfg.validate()
            except ValueError as exc:
                raise ModelError(str(exc)) from None
        ckpt = model / "gnn"
        if from_checkpoint and not (ckpt / "checkpoint.json").exists():
            raise ModelError(f"{model} has no GNN checkpoint to fine-tune; run `pymk train` without it first")
        cfg.enabled = True
        positives = None
        if delta is not None:
            from pymk.pipeline.delta import merge_delta

            if not from_checkpoint:
                raise ModelError("--delta fine-tunes an existing checkpoint: add --from-checkpoint")
            graph, d_lo, d_hi = merge_delta(m, delta, log=lambda s: typer.echo(s, err=True))
            positives = (d_lo, d_hi)
        else:
            graph = m.snapshot
        cores = os.cpu_count() or 1
        with _executor(executor, ray_address) as ex:
            if workers > cores and ex.kind == "local":
                typer.echo(f"warning: --workers {workers} is more than the {cores} cores here; using {cores}",
                           err=True)
                workers = cores
            emb, summary = train_embeddings(graph, cfg, ckpt, workers=workers, positives=positives,
                                            from_checkpoint=ckpt if from_checkpoint else None, ray=ex.kind == "ray")
        from pymk.pipeline.build import ann_stage

        ann_summary = ann_stage(emb, model, m.config, lambda s: typer.echo(s, err=True))  # new vectors: new index
        if delta is not None:  # the model now recommends on the graph with the new friendships
            from pymk.pipeline.delta import replace_snapshot

            replace_snapshot(model, graph)
    except _user_errors() as exc:
        raise _err(str(exc)) from None
    meta = json.loads((model / "model.json").read_text())
    meta["stages"]["gnn"] = summary
    meta["stages"]["ann"] = ann_summary
    meta["config"]["gnn"] = cfg.to_dict()
    from pymk.pipeline.model import write_model_meta

    write_model_meta(model, meta)
    typer.echo(f"embeddings written to {ckpt}: {summary}")


@app.command()
def publish(
    model: Annotated[Path, typer.Option(help="model directory from `pymk build` or `pymk update`")],
    redis: Annotated[str | None, typer.Option(help="Redis URL, e.g. redis://127.0.0.1:6379/0: the serving state "
                                              "below goes there, and the version is published there")] = None,
    hot_users: Annotated[int, typer.Option(min=0, help="with GNN embeddings: put the int8 vectors of this many most "
                                           "active users in Redis (hot tier) and every user's in DIR/"
                                           "serving/emb_cold (RocksDB, cold tier)")] = 0,
) -> None:
    """Make a model version the one its deployment serves. With --redis, first load its serving state
    into Redis (pipelined, idempotent): a sharded model's adjacency lists (keys tagged by shard), the
    learned ranker's user features (one packed row per user) and, with --hot-users, the embedding tiers.
    Then name it in its lineage's publish pointer (in Redis with --redis, else the file beside the
    lineage's event log): every running worker of the lineage swaps to it (pymk/serving/swap.py)."""
    from tqdm import tqdm

    from pymk.features.store import InProcessFeatureStore, RedisFeatureStore
    from pymk.graph.shard_store import RedisShardStore
    from pymk.pipeline.model import Model, ModelError, _redis_client, feature_prefix, has_feature_table, model_version

    try:
        m = Model.load(model)
        has_features = has_feature_table(model)
        if hot_users and m.embeddings is None:
            raise ModelError(f"{model} has no embeddings for --hot-users: build with gnn.enabled = true")
        if redis is None and hot_users:
            raise ModelError("--hot-users puts the hot embedding tier in Redis: give --redis URL")
        from pymk.pipeline.lineage import Pointer, events_record

        if redis is None and str(events_record(m.meta).get("log", "")).startswith("redis:"):
            raise ModelError(f"{model} was updated from a Redis stream: its services read the publish pointer "
                             f"there; give --redis URL")
        client = _redis_client(redis) if redis is not None else None
        if client is not None and m.plan is None and not has_features and not hot_users:
            typer.echo(f"{model}: no serving state for Redis (no graph shards, no learned ranker's features, no "
                       f"--hot-users)", err=True)
        if client is not None and m.plan is not None:
            store = RedisShardStore(client, prefix=f"pymk:graph:{model_version(m.meta)}")
            total = int(m.plan.home.size + m.plan.rep_idx.size)
            with tqdm(total=total, desc="publishing adjacency lists", unit="list") as bar:
                n = store.publish(m.graph, m.plan, progress=bar.update)
            typer.echo(f"published {n:,} adjacency lists of {m.plan.shards} shards under {store.prefix} on {redis}")
        if client is not None and has_features:
            table = InProcessFeatureStore.load(model / "features", m.graph.num_users)
            fs = RedisFeatureStore(client, feature_prefix(m.meta), table.width, table.emb_dim)
            with tqdm(total=table.table.shape[0], desc="publishing user features", unit="user") as bar:
                n = fs.publish(np.asarray(table.table), progress=bar.update)
            typer.echo(f"published features of {n:,} users under {fs.prefix} on {redis}")
        if hot_users:
            from pymk.serving.embeddings import COLD_DIR, hot_prefix, publish_hot, write_cold
            from pymk.serving.embeddings import hot_users as most_active

            emb = m.embeddings
            with tqdm(total=emb.shape[0], desc="writing the cold embedding tier", unit="user") as bar:
                write_cold(model / COLD_DIR, emb, version=m.version, progress=bar.update)
            hot = most_active(m.graph, hot_users)
            with tqdm(total=hot.size, desc="publishing the hot embedding tier", unit="user") as bar:
                n = publish_hot(client, m.version, emb, hot, progress=bar.update)
            typer.echo(f"embedding tiers: {n:,} users hot under {hot_prefix(m.version)} on {redis}, "
                       f"{emb.shape[0]:,} cold in {model / COLD_DIR} ({emb.shape[1] + 4} bytes a user, int8)")
        pointer = Pointer.of_model(model, m.meta, client=client)
        rec = pointer.write(model, m.meta)  # last: a worker that swaps finds every store above in place
        typer.echo(f"published version {rec['version']} of lineage {rec['lineage']} ({pointer.where}): running "
                   f"services of the lineage swap to it")
    except _user_errors() as exc:
        raise _err(str(exc)) from None


def _serve_workers(host: str, port: int, workers: int) -> None:
    """uvicorn with `workers` processes, their Prometheus metrics summed through files in one directory
    (PROMETHEUS_MULTIPROC_DIR: the operator's, or a fresh one removed at exit)."""
    import shutil
    import tempfile

    import uvicorn

    from pymk.serving.metrics import MULTIPROC_DIR_ENV

    own = not os.environ.get(MULTIPROC_DIR_ENV)
    if own:
        os.environ[MULTIPROC_DIR_ENV] = tempfile.mkdtemp(prefix="pymk-metrics-")
    typer.echo(f"metrics of all workers summed through {os.environ[MULTIPROC_DIR_ENV]}", err=True)
    try:
        uvicorn.run("pymk.serving.app:create_app", factory=True, host=host, port=port, workers=workers,
                    log_level="warning")
    finally:
        if own:
            shutil.rmtree(os.environ.pop(MULTIPROC_DIR_ENV), ignore_errors=True)


@app.command()
def serve(
    model: Annotated[Path, typer.Option(help="model directory from `pymk build`")],
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    shards: Annotated[int | None, typer.Option(min=1, help="refuse a model built with another shard count")] = None,
    redis: Annotated[str | None, typer.Option(help="Redis URL: the L2 cache and user actions, and what `pymk "
                                                "publish` put there (graph shards, ranker features)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="worker processes (each loads the model)")] = 1,
    executor: Annotated[str | None, typer.Option(help="a sharded model's shard servers: local (in process, the "
                                                 "default) | ray (one Ray actor per shard)")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster for --executor ray (default: start a "
                                                    "local one)")] = None,
    tier: Annotated[bool | None, typer.Option("--tier/--no-tier", help="a sharded model served as a stateless "
                                              "ranking tier that maps no adjacency, every list read from the "
                                              "shard servers (default: with --executor ray)")] = None,
    insecure_no_auth: Annotated[bool, typer.Option("--insecure-no-auth", help="serve a model without API keys on "
                                                   "a non-loopback interface (anyone who reaches it can read "
                                                   "and change everything)")] = False,
) -> None:
    """Serve recommendations over HTTP (see pymk/serving/app.py; settings also from PYMK_* variables).
    Requests need an API key once the model has one (`pymk keys create`)."""
    import os

    import uvicorn

    from pymk.serving.service import Service
    from pymk.serving.settings import ServeSettings

    os.environ["PYMK_MODEL"] = str(model)
    if redis is not None:
        os.environ["PYMK_REDIS_URL"] = redis
    if executor not in (None, "local", "ray"):
        raise _err(f"--executor must be local or ray, got {executor!r}")
    overrides = {k: v for k, v in (("executor", executor), ("ray_address", ray_address), ("tier", tier))
                 if v is not None}
    settings = ServeSettings(**overrides)  # flags over PYMK_* variables
    try:
        auth = _auth_line(model, host, insecure_no_auth)
        svc = Service.from_settings(settings, shards=shards)  # fails here, clearly, not in a worker
        if workers == 1:
            from pymk.serving.app import create_app

            served = create_app(svc)  # reads the console's display names: a bad file is named here
        elif settings.user_names:  # each worker reads them; a bad file is named here, not in a worker
            from pymk.console.names import UserNames

            UserNames.load(settings.user_names)
    except _user_errors() as exc:
        raise _err(str(exc)) from None
    typer.echo(auth, err=True)
    typer.echo(f"serving {model} (model {svc.model.version}) on http://{host}:{port}, "
               f"cache: {svc.cache.kind}, workers: {workers}", err=True)
    if workers > 1:  # each worker process builds its own Service from the PYMK_* environment
        del svc  # the check above is done; the parent need not hold a model while its workers serve
        os.environ.update({f"PYMK_{k.upper()}": str(v).lower() if isinstance(v, bool) else v
                           for k, v in overrides.items()})
        _serve_workers(host, port, workers)
        return
    svc.warm()
    del svc  # the app owns the service: a published version swaps it out, and it must be free to go
    uvicorn.run(served, host=host, port=port, log_level="warning")


def _auth_line(model: Path, host: str, insecure: bool) -> str:
    """What `serve` says about authentication; refuses an open service on a non-loopback interface."""
    import ipaddress

    from pymk.serving.auth import KeyStore

    store = KeyStore.of_model(model)
    if store.enabled:
        live = sum(not k.revoked for k in store.keys())
        return f"auth: API keys required ({live} live key(s); pymk keys list --model {model})"
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not insecure:
        raise _err(f"model {model} has no API keys and --host {host} is not a loopback interface: create one "
                   f"(pymk keys create --model {model} --scopes admin) or pass --insecure-no-auth")
    return (f"auth: OFF - model {model} has no API keys, so anyone who reaches {host} can read and change "
            f"everything; create one with: pymk keys create --model {model} --scopes admin")


keys_app = typer.Typer(no_args_is_help=True, help="API keys of a model's service: create, list, revoke "
                       "(pymk.serving.auth).")
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    model: Annotated[Path, typer.Option(help="model directory the key is for")],
    scopes: Annotated[str, typer.Option(help="admin, or a comma-separated list of recommendations:read, "
                                        "actions:write")],
    user: Annotated[int | None, typer.Option(help="bind the key to this user id: it reads only that user's "
                                             "recommendations and acts only as that user")] = None,
    name: Annotated[str, typer.Option(help="a label for listings")] = "",
) -> None:
    """Create a key and print it once (only its hash is stored, in DIR/serving/keys.json)."""
    from pymk.pipeline.model import read_model_meta
    from pymk.serving.auth import KeyStore, parse_scopes

    try:  # a key for a directory that is not a model is a mistake
        read_model_meta(model)
        key, token = KeyStore.of_model(model).create(parse_scopes(scopes), user=user, name=name)
    except _user_errors() as exc:
        raise _err(str(exc)) from None
    typer.echo(f"created key {key.id} ({','.join(key.scopes)}{f', user {user}' if user is not None else ''}); "
               "it is shown only now:", err=True)
    typer.echo(token)


@keys_app.command("list")
def keys_list(model: Annotated[Path, typer.Option(help="model directory")]) -> None:
    """The model's keys (ids, scopes, users, state; never the keys themselves)."""
    import datetime

    from pymk.serving.auth import KeyStore

    try:
        keys = KeyStore.of_model(model).keys()
    except _user_errors() as exc:
        raise _err(str(exc)) from None
    if not keys:
        typer.echo(f"no API keys for {model}: its service runs without authentication, on loopback only")
    for k in keys:
        when = datetime.datetime.fromtimestamp(k.created, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        typer.echo(f"{k.id}  {','.join(k.scopes):<40} user {k.user if k.user is not None else '-':<12} "
                   f"{'REVOKED' if k.revoked else 'live':<8} {when}  {k.name}")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id (pymk keys list)")],
    model: Annotated[Path, typer.Option(help="model directory")],
) -> None:
    """Revoke a key: every worker of the service refuses it within a second, without a restart."""
    from pymk.serving.auth import KeyStore

    try:
        KeyStore.of_model(model).revoke(key_id)
    except _user_errors() as exc:
        raise _err(str(exc)) from None
    typer.echo(f"revoked key {key_id}")


@app.command()
def capacity(
    measured: Annotated[list[Path] | None, typer.Option(
        help="JSON from `benchmarks/bench_serve.py --json` (serving) or `benchmarks/bench_pipeline.py --section "
             "scale|update --json` (the nightly pipeline): replace the brief's assumptions by the figures "
             "measured; repeat for several")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a parameter, e.g. --set users=2e9")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the plan as JSON")] = None,
) -> None:
    """The brief's capacity arithmetic (RPS, machines, ANN shards, embedding and cache bytes, Redis nodes)."""
    import json
    from dataclasses import asdict, fields

    from pymk.serving.capacity import CapacityInputs, plan
    from pymk.serving.capacity import measured as apply_measured

    x = CapacityInputs()
    names = {f.name: f.type for f in fields(CapacityInputs)}
    for path in measured or []:
        try:
            x, notes = apply_measured(x, path)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise _err(f"{path}: not a bench_serve.py or bench_pipeline.py JSON: {exc}") from None
        for line in notes:
            typer.echo(f"measured: {line}")
    for item in set_ or []:
        name, _, value = item.partition("=")
        if name not in names or not value:
            raise _err(f"--set {item!r}: expected NAME=VALUE with NAME one of {', '.join(names)}")
        try:
            setattr(x, name, int(float(value)) if names[name] in ("int", int) else float(value))
        except ValueError:
            raise _err(f"--set {item!r}: {value!r} is not a number") from None
    rows = plan(x)
    width = max(len(r[0]) for r in rows)
    for name, value, unit, how in rows:
        shown = f"{value:>16,.0f}" if isinstance(value, int) else f"{value:>16,.1f}"
        typer.echo(f"{name:<{width}}  {shown} {unit:<8}  {how}")
    if json_out is not None:
        json_out.write_text(json.dumps({"inputs": asdict(x), "plan": [
            {"quantity": n, "value": v, "unit": u, "how": h} for n, v, u, h in rows]}, indent=2))


@app.command()
def quickstart(
    workdir: Annotated[Path, typer.Option(help="where the graph and model go")] = Path("pymk-quickstart"),
    edges: Annotated[Path | None, typer.Option(help="use this edge list instead of a synthetic one")] = None,
    users: Annotated[int, typer.Option(help="synthetic graph size")] = 40_000,
    avg_degree: Annotated[float, typer.Option(help="synthetic mean degree")] = 15.0,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="serve the model at the end")] = True,
    port: Annotated[int, typer.Option(help="port to serve on")] = 8000,
) -> None:
    """The main job: make (or load) a graph, build, show recommendations and evaluation, then serve."""
    from pymk.eval.runner import evaluate
    from pymk.graph.synth import SynthConfig, generate, write_edges
    from pymk.pipeline.build import build_from_edges, ingest
    from pymk.pipeline.model import Model

    workdir.mkdir(parents=True, exist_ok=True)
    if edges is None:
        edges = workdir / "synthetic-edges.csv.gz"
        if not edges.exists():
            typer.echo(f"[1/5] generating a synthetic social graph: {users:,} users, mean degree {avg_degree}")
            write_edges(edges, *generate(SynthConfig(users, avg_degree, seed=0)))
    typer.echo(f"[2/5] ingesting {edges}")
    try:
        e, report = ingest(edges)
    except _user_errors() as exc:
        raise _err(str(exc)) from None
    typer.echo("[3/5] building the model")
    model_dir = build_from_edges(e, workdir / "model", report=report)
    m = Model.load(model_dir)
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(m.graph.num_users, size=min(3, m.graph.num_users), replace=False))
    r = m.recommend(sample, 5)
    typer.echo("[4/5] sample recommendations")
    for b, u in enumerate(sample):
        typer.echo(f"  user {m.graph.ids[u]} ({int(m.graph.degree[u])} friends):")
        for j in range(int(r.count[b])):
            typer.echo(f"    {j + 1}. user {m.graph.ids[r.cand[b, j]]}  score {r.score[b, j]:.3f}  "
                       f"{r.mutual[b, j]} mutual friend{'s' if r.mutual[b, j] != 1 else ''}")
    typer.echo("[5/5] evaluation (shared protocol: 10% of edges held out)")
    typer.echo(evaluate(e, dataset=edges.name).table())
    if serve_after:
        serve(model=model_dir, host="127.0.0.1", port=port)
    else:
        typer.echo(f"model in {model_dir}; serve it with: pymk serve --model {model_dir}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
