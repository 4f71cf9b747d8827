"""The offline pipeline side by side.

    .venv/bin/python -m benchmarks.bench_pipeline [--section executor|update] [--users 200000] [--avg-degree 20]
        [--train-users 3000] [--ray-address ADDR] [--config FILE] [--cache /tmp/pymk-bench] [--json OUT]

executor: the ranker's training lists (Stage 1 + pair features per 256-user chunk, `ranker.splits` internal
splits) computed by the local executor and by Ray tasks.
update: the brief's daily incremental update. The synthetic graph's own `ts` column: version N is built from
the friendships before the latest `--growth` share of them (default 0.5%; the brief's day is ~0.1% of a
1B-user graph's friendships: 10M new users a month with ~100 friends each plus ~115 new friendships a second;
the synthetic `ts` spans 556 days front-loaded, so its literal last day holds one friendship); those latest
friendships (new users among them) are the event log;
then `pymk update` (N + log -> N+1) against a full `pymk build` of the same final graph, same config, and
the quality of both (recall@20 of friendships each did not see: a random 1% of the final graph's edges held
out of both, from 2,000 users).

Graph: `pymk synth --users N --avg-degree D --seed 0` (cached). The two executors run alternately twice;
the report gives each one's median wall time and checks the lists are equal. Without `--ray-address` Ray
starts a local cluster on this machine's cores (so the comparison here says what Ray's task overhead
costs; the gain needs more machines).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_fof import load_graph
from pymk.config import PymkConfig
from pymk.pipeline.executor import LocalExecutor, RayExecutor
from pymk.ranking.learned import training_data


def run_update(args, g):
    import tempfile

    from pymk.graph.edges import EdgeList
    from pymk.pipeline.build import build_from_edges
    from pymk.pipeline.model import Model
    from pymk.pipeline.update import snapshot_edges, update
    from pymk.stream.log import FileEventLog

    cfg = PymkConfig.from_file(args.config)
    e = snapshot_edges(g)
    rng = np.random.default_rng(0)
    held = rng.random(e.lo.size) < 0.01  # for quality: in neither model
    ts = np.asarray(e.ts)
    cut = np.quantile(ts[~held], 1.0 - args.growth)
    day = (ts > cut) & ~held
    base = ~day & ~held
    users_n = np.unique(np.concatenate([e.lo[base], e.hi[base]]))
    ids = np.asarray(e.ids)
    tmp = Path(tempfile.mkdtemp(prefix="pymk-bench-update-", dir=args.cache))
    remap = np.full(ids.size, -1, np.int64)
    remap[users_n] = np.arange(users_n.size)
    n_edges = EdgeList(ids[users_n], remap[e.lo[base]].astype(np.int32), remap[e.hi[base]].astype(np.int32),
                       ts[base])
    log = FileEventLog(tmp / "events.log")
    order = np.argsort(ts[day], kind="stable")
    for a, b, t in zip(ids[e.lo[day]][order].tolist(), ids[e.hi[day]][order].tolist(), ts[day][order].tolist(),
                       strict=True):
        log.append(a, b, float(t), "add")
    keep = ~held
    used = np.unique(np.concatenate([e.lo[keep], e.hi[keep]]))
    remap = np.full(ids.size, -1, np.int64)
    remap[used] = np.arange(used.size)
    full_edges = EdgeList(ids[used], remap[e.lo[keep]].astype(np.int32), remap[e.hi[keep]].astype(np.int32),
                          ts[keep])
    def say(s):
        print(s, flush=True)

    build_from_edges(n_edges, tmp / "n", cfg, log=say)
    t = time.perf_counter()
    update(tmp / "n", tmp / "events.log", tmp / "n1", log=say)
    t_update = time.perf_counter() - t
    t = time.perf_counter()
    build_from_edges(full_edges, tmp / "full", cfg, log=say)
    t_build = time.perf_counter() - t
    # quality on the held-out friendships of 2,000 users who have some
    src = np.concatenate([e.lo[held], e.hi[held]])
    dst = np.concatenate([e.hi[held], e.lo[held]])
    users = np.unique(src)
    users = rng.choice(users, min(2000, users.size), replace=False)
    truth = {int(u): set(ids[dst[src == u]].tolist()) for u in users.tolist()}
    recall = {}
    for name in ("n1", "full"):
        m = Model.load(tmp / name)
        idx = m.index_of(ids[users])
        r = m.recommend(idx, 20)
        got = sum(len(truth[int(u)] & set(np.asarray(m.graph.ids)[r.cand[i, :r.count[i]]].tolist()))
                  for i, u in enumerate(users.tolist()))
        recall[name] = round(got / sum(len(v) for v in truth.values()), 4)
    return {"growth": args.growth, "users": int(ids.size), "edges_n": int(base.sum()), "events": int(day.sum()),
            "new_users": int(json.loads((tmp / "n1" / "model.json").read_text())["stages"]["graph"]["users"]
                             - users_n.size), "update_s": round(t_update, 1), "build_s": round(t_build, 1),
            "update_over_build": round(t_update / t_build, 3), "recall@20": {"update": recall["n1"],
                                                                            "full_build": recall["full"]}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--section", default="executor", choices=("executor", "update"))
    ap.add_argument("--config", type=Path)
    ap.add_argument("--growth", type=float, default=0.005)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--avg-degree", type=float, default=20)
    ap.add_argument("--train-users", type=int, default=3000)
    ap.add_argument("--ray-address")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/pymk-bench"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    g = load_graph(args.users, args.avg_degree, args.cache)
    if args.section == "update":
        report = {"machine": f"{platform.node()} {os.cpu_count()} cores", "avg_degree": args.avg_degree,
                  "config": str(args.config), **run_update(args, g)}
        print(json.dumps(report, indent=1))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        return
    cfg = PymkConfig()
    cfg.ranker.train_users = args.train_users
    executors = {"local": LocalExecutor(), "ray": RayExecutor(args.ray_address)}
    times: dict[str, list] = {k: [] for k in executors}
    out = {}
    for _ in range(2):
        for name, ex in executors.items():
            t = time.perf_counter()
            out[name] = training_data(g, cfg, log=lambda s: None, executor=ex)
            times[name].append(time.perf_counter() - t)
    equal = all(np.array_equal(out["local"][k], out["ray"][k], equal_nan=True) for k in ("X", "y", "group", "users"))
    report = {"machine": f"{platform.node()} {os.cpu_count()} cores", "users": args.users,
              "avg_degree": args.avg_degree, "train_users_per_split": args.train_users, "splits": cfg.ranker.splits,
              "rows": int(out["local"]["y"].size), "equal": equal, "ray": executors["ray"].describe(),
              "seconds": {k: round(float(np.median(v)), 2) for k, v in times.items()}}
    report["ray_over_local"] = round(report["seconds"]["ray"] / report["seconds"]["local"], 2)
    print(json.dumps(report, indent=1))
    executors["ray"].close()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
