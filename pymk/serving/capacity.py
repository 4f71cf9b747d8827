"""Capacity planner: the design brief's serving arithmetic, from parameters (`pymk capacity`).

With the defaults it reproduces the brief: 1B users x 3 requests/day -> ~35K RPS average, ~70K peak;
70% cache hits -> ~21K full-pipeline RPS; 50 ms CPU per request on 8-vCPU machines -> ~132 machines,
~200 with 50% headroom; 30% of those miss the candidate cache -> 6,300 ANN QPS / 200 per shard = 32
shards; 512 GB of float32 128-d embeddings; 6 GB of cached recommendations for 1% of 300M DAU.
`measured(...)` replaces assumptions by what `benchmarks/bench_serve.py` measured on this machine; with the
offline pipeline's measurements (`benchmarks/bench_pipeline.py --section scale|update --json`) the plan
adds the nightly side: a full build and a daily update of the 1B-user graph on `offline_machines`, from the
measured cost per friendship (CPU-seconds, the Ray executor's chunks spread over every core), beside the
brief's 10-24 h full retrain and 2-4 h incremental update.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path


@dataclass
class CapacityInputs:
    users: float = 1e9
    requests_per_user_day: float = 3.0
    peak_factor: float = 2.0
    cache_hit_rate: float = 0.70  # L2 (recommendations) cache
    cpu_ms_per_request: float = 50.0  # full pipeline, uncached
    cpu_ms_per_hit: float = 0.0  # the brief does not count cache hits
    vcpus_per_machine: int = 8
    headroom: float = 1.5
    candidate_cache_hit_rate: float = 0.70  # requests reaching ANN = full-pipeline requests x (1 - this)
    ann_qps_per_shard: float = 200.0
    emb_dim: int = 128
    emb_bytes_per_value: float = 4.0  # float32; 1 + 4 / emb_dim for int8 with a per-vector float32 scale
    hot_fraction: float = 0.01  # tiered embeddings: share of users kept hot in Redis
    dau: float = 300e6
    cached_fraction_of_dau: float = 0.01
    bytes_per_cached_entry: float = 2048
    features_per_request: int = 1001  # a user and its 1,000 candidates, one pipelined fetch
    # keys a Redis node serves per second in 1,000-key MGET batches (the brief's "30-50 nodes" for 21M
    # keys/s implies 420K-700K; a single client here measured ~500K, see docs/BENCHMARKS.md)
    redis_keys_per_node_s: float = 500_000
    # the offline side (0: not measured; the plan then shows no offline rows)
    friends_per_user: float = 100.0
    offline_machines: int = 100  # the brief's ~100 training machines
    offline_vcpus_per_machine: int = 32
    build_cpu_s_per_edge: float = 0.0  # a full `pymk build`, CPU-seconds per friendship
    update_over_build: float = 0.0  # a daily `pymk update` / a full build of the same graph


def plan(x: CapacityInputs) -> list[tuple[str, float, str, str]]:
    """The arithmetic, line by line: (quantity, value, unit, how)."""
    avg = x.users * x.requests_per_user_day / 86_400
    peak = avg * x.peak_factor
    full = peak * (1 - x.cache_hit_rate)
    hits = peak * x.cache_hit_rate
    cpu = full * x.cpu_ms_per_request / 1e3 + hits * x.cpu_ms_per_hit / 1e3
    machines = cpu / x.vcpus_per_machine
    ann = full * (1 - x.candidate_cache_hit_rate)
    emb = x.users * x.emb_dim * x.emb_bytes_per_value
    cache_users = x.dau * x.cached_fraction_of_dau
    redis_ops = full * x.features_per_request
    return [
        ("requests/s, average", avg, "RPS", f"{x.users:,.0f} users x {x.requests_per_user_day:g}/day / 86,400 s"),
        ("requests/s, peak", peak, "RPS", f"average x {x.peak_factor:g}"),
        ("full-pipeline requests/s", full, "RPS", f"peak x (1 - {x.cache_hit_rate:.0%} cache hits)"),
        ("CPU needed", cpu, "vCPU", f"full x {x.cpu_ms_per_request:g} ms"
         + (f" + hits x {x.cpu_ms_per_hit:g} ms" if x.cpu_ms_per_hit else "")),
        ("ranking machines", math.ceil(machines), "machines", f"CPU / {x.vcpus_per_machine} vCPU"),
        ("ranking machines with headroom", math.ceil(machines * x.headroom), "machines", f"x {x.headroom:g}"),
        ("ANN queries/s", ann, "QPS", f"full x (1 - {x.candidate_cache_hit_rate:.0%} candidate-cache hits)"),
        ("ANN shards", math.ceil(ann / x.ann_qps_per_shard - 1e-9), "shards",
         f"/ {x.ann_qps_per_shard:g} QPS per shard"),
        ("embeddings, all users", emb / 1e9, "GB", f"{x.users:,.0f} x {x.emb_dim} x {x.emb_bytes_per_value:g} B"),
        ("embeddings, hot tier (Redis)", emb * x.hot_fraction / 1e9, "GB", f"{x.hot_fraction:.0%} most active users"),
        ("cached recommendations", cache_users * x.bytes_per_cached_entry / 1e9, "GB",
         f"{x.cached_fraction_of_dau:.0%} of {x.dau:,.0f} DAU x {x.bytes_per_cached_entry:,.0f} B"),
        ("feature-store reads/s", redis_ops, "keys/s", f"full x {x.features_per_request:,} keys (1 pipeline each)"),
            ("feature-store Redis nodes", math.ceil(redis_ops / x.redis_keys_per_node_s), "nodes",
         f"/ {x.redis_keys_per_node_s:,.0f} keys/s per node"),
    ] + _offline(x)


def _offline(x: CapacityInputs) -> list[tuple[str, float, str, str]]:
    """The nightly pipeline's rows, when its cost per friendship was measured."""
    if not x.build_cpu_s_per_edge:
        return []
    edges = x.users * x.friends_per_user / 2
    cores = x.offline_machines * x.offline_vcpus_per_machine
    build_h = edges * x.build_cpu_s_per_edge / cores / 3600
    rows = [("friendships", edges, "edges", f"{x.users:,.0f} users x {x.friends_per_user:g} friends / 2"),
            ("full build, CPU", edges * x.build_cpu_s_per_edge / 3600, "CPU-h",
             f"x {x.build_cpu_s_per_edge:.3g} CPU-s per friendship (measured)"),
            ("full build, wall", build_h, "hours",
             f"on {x.offline_machines} x {x.offline_vcpus_per_machine} vCPU (brief: 10-24 h full retrain)")]
    if x.update_over_build:
        rows.append(("daily update, wall", build_h * x.update_over_build, "hours",
                     f"full build x {x.update_over_build:.3g} (measured; brief: 2-4 h)"))
    return rows


def measured(x: CapacityInputs, path: Path) -> tuple[CapacityInputs, list[str]]:
    """Inputs with the figures of a `bench_serve.py --json` file (or any JSON of CapacityInputs names).

    Returns the new inputs and one line per replaced assumption."""
    data = json.loads(Path(path).read_text())
    out = CapacityInputs(**asdict(x))
    notes = []

    def put(name, value, why):
        notes.append(f"{name}: {getattr(out, name):g} -> {value:.4g} ({why})")
        setattr(out, name, value)

    if "step_ms" in data:  # bench_serve.py
        put("cpu_ms_per_request", sum(data["step_ms"].values()),
            f"server time of an uncached request, {data.get('users', 0):,} users, measured on {data.get('machine')}")
    if "hit_ms" in data:
        put("cpu_ms_per_hit", data["hit_ms"]["mean"], "mean cache-hit latency, client side")
    if "zipf" in data:
        put("cache_hit_rate", data["zipf"]["hit_rate"],
            f"Zipf({data['zipf']['exponent']}) workload of {data['zipf']['requests']:,} requests")
    elif "rows" in data and data["rows"] and "build" in data["rows"][-1]:  # bench_pipeline.py --section scale
        row = data["rows"][-1]  # the largest graph measured
        cores = float(data.get("cores") or str(data.get("machine", "")).split()[-2])
        put("build_cpu_s_per_edge", row["build"]["seconds"] * cores / row["build"]["edges"],
            f"`pymk build --executor ray` of {row['users']:,} users ({row['build']['edges']:,} friendships) in "
            f"{row['build']['seconds']:,.0f} s on {cores:g} cores, {data.get('machine')}")
    elif "update_over_build" in data:  # bench_pipeline.py --section update
        put("update_over_build", data["update_over_build"],
            f"`pymk update` {data['update_s']} s vs a full build {data['build_s']} s, {data.get('events', 0):,} events")
    else:  # a plain JSON of parameter names
        names = {f.name for f in fields(CapacityInputs)}
        for key, value in data.items():
            if key in names:
                put(key, float(value), "given")
    if not notes:
        raise ValueError("it holds no figure the plan uses")
    return out, notes
