"""The offline pipeline side by side.

    .venv/bin/python -m benchmarks.bench_pipeline [--section executor|update|scale|infer] [--users 200000]
        [--avg-degree 20] [--train-users 3000] [--ray-address ADDR] [--config FILE] [--cache /tmp/pymk-bench]
        [--json OUT] [--scale-users 1000000,3000000,10000000] [--plot docs/scale.png]

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

infer: GNN batch inference over the whole graph (default GraphSAGE, untrained weights), in process against
each layer's chunks as Ray tasks, alternately twice; median wall times and the largest difference.

scale: `pymk synth` then `pymk build --executor ray` (the default pipeline) as commands, at each of
`--scale-users` (mean degree `--avg-degree`): wall time and the peak RSS of every process each one starts
(the driver, Ray's GCS, raylet and workers: `benchmarks/proctree.py` samples /proc), the fitted growth
exponent of build wall time (least squares on log-log), and a PNG plot.

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
import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_fof import load_graph
from pymk.config import PymkConfig
from pymk.pipeline.executor import LocalExecutor, RayExecutor
from pymk.ranking.learned import training_data


def _day_of_growth(ids, lo, hi, ts, base, day, users_n, cache: Path, reuse: Path | None = None):
    """Version N's edges (the `base` friendships over `users_n`, re-indexed) and the event log of the `day`
    friendships in time order, under a new directory of `cache` (or `reuse`, an earlier run's directory of the
    same graph and arguments, whose N and full build are then kept). Returns (directory, N's EdgeList)."""
    import tempfile

    from pymk.graph.edges import EdgeList
    from pymk.stream.log import FileEventLog

    remap = np.full(ids.size, -1, np.int64)
    remap[users_n] = np.arange(users_n.size)
    n_edges = EdgeList(ids[users_n], remap[lo[base]].astype(np.int32), remap[hi[base]].astype(np.int32), ts[base])
    if reuse is not None and (reuse / "events.log").exists():
        return reuse, n_edges
    tmp = Path(tempfile.mkdtemp(prefix="pymk-bench-update-", dir=cache))
    log = FileEventLog(tmp / "events.log")
    order = np.argsort(ts[day], kind="stable")
    for a, b, t in zip(ids[lo[day]][order].tolist(), ids[hi[day]][order].tolist(), ts[day][order].tolist(),
                       strict=True):
        log.append(a, b, float(t), "add")
    return tmp, n_edges


def _update_and_full_build(tmp: Path, n_edges, full_edges, cfg) -> tuple[float, float]:
    """Builds N, times `pymk update` (N + log -> N+1) and a full build of the final graph, side by side."""
    from pymk.pipeline.build import build_from_edges
    from pymk.pipeline.update import update

    def say(s):
        print(s, flush=True)

    if not (tmp / "n" / "model.json").exists():
        build_from_edges(n_edges, tmp / "n", cfg, log=say)
    shutil.rmtree(tmp / "n1", ignore_errors=True)
    t = time.perf_counter()
    update(tmp / "n", tmp / "events.log", tmp / "n1", log=say)
    t_update = time.perf_counter() - t
    kept = tmp / "full_build_s.json"
    if (tmp / "full" / "model.json").exists() and kept.exists():  # --reuse: the earlier run's full build
        say(f"full build kept from the earlier run in {tmp} ({json.loads(kept.read_text())['seconds']} s)")
        return t_update, json.loads(kept.read_text())["seconds"]
    t = time.perf_counter()
    build_from_edges(full_edges, tmp / "full", cfg, log=say)
    t_build = time.perf_counter() - t
    kept.write_text(json.dumps({"seconds": round(t_build, 1)}))
    return t_update, t_build


def run_update(args, g):
    from pymk.graph.edges import EdgeList
    from pymk.pipeline.model import Model
    from pymk.pipeline.update import snapshot_edges

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
    tmp, n_edges = _day_of_growth(ids, e.lo, e.hi, ts, base, day, users_n, args.cache, args.reuse)
    keep = ~held
    used = np.unique(np.concatenate([e.lo[keep], e.hi[keep]]))
    remap = np.full(ids.size, -1, np.int64)
    remap[used] = np.arange(used.size)
    full_edges = EdgeList(ids[used], remap[e.lo[keep]].astype(np.int32), remap[e.hi[keep]].astype(np.int32),
                          ts[keep])
    t_update, t_build = _update_and_full_build(tmp, n_edges, full_edges, cfg)
    # quality on the held-out friendships of 2,000 users who have some
    src = np.concatenate([e.lo[held], e.hi[held]])
    dst = np.concatenate([e.hi[held], e.lo[held]])
    users = np.unique(src)
    users = rng.choice(users, min(2000, users.size), replace=False)
    truth = {int(u): set(ids[dst[src == u]].tolist()) for u in users.tolist()}
    recall, stage1 = {}, {}
    n_truth = sum(len(v) for v in truth.values())

    def found(m, lists):
        mids = np.asarray(m.graph.ids)
        return sum(len(truth[int(u)] & set(mids[lists.cand[i, :lists.count[i]]].tolist()))
                   for i, u in enumerate(users.tolist()))

    for name in ("n1", "full"):
        m = Model.load(tmp / name)
        idx = m.index_of(ids[users])
        recall[name] = round(found(m, m.recommend(idx, 20)) / n_truth, 4)
        stage1[name] = round(found(m, m.candidates(idx, k=1000)) / n_truth, 4)
    return {"growth": args.growth, "users": int(ids.size), "edges_n": int(base.sum()), "events": int(day.sum()),
            "new_users": int(json.loads((tmp / "n1" / "model.json").read_text())["stages"]["graph"]["users"]
                             - users_n.size), "update_s": round(t_update, 1), "build_s": round(t_build, 1),
            "update_over_build": round(t_update / t_build, 3), "recall@20": {"update": recall["n1"],
                                                                            "full_build": recall["full"]},
            "stage1_recall@1000": {"update": stage1["n1"], "full_build": stage1["full"]}}


def run_update_real(args) -> dict:
    """The update on a real graph without timestamps, under the shared protocol: its train edges (protocol
    split) in file order, the last `--growth` of them (default here 5%) replayed as events onto version N
    built from the rest; N+1 against a full build of the whole train graph, both scored on the protocol's
    test edges (Stage-1 recall@1000, Recall@20, NDCG@10, MRR)."""
    from pymk.eval.metrics import hit_matrix, micro_recall, ranking_metrics
    from pymk.eval.protocol import split_edges
    from pymk.graph.edges import normalize_edges
    from pymk.graph.ingest import read_edges
    from pymk.pipeline.model import Model

    cfg = PymkConfig.from_file(args.config)
    raw = read_edges(args.dataset)
    raw.ts = np.arange(raw.src.size, dtype=np.int64)  # file order is the only time there is
    edges, _ = normalize_edges(raw)
    split = split_edges(edges)
    tr = split.train
    ids, ts = np.asarray(edges.ids), np.asarray(tr.ts)
    cut = np.quantile(ts, 1.0 - args.growth)
    day = ts > cut
    base = ~day
    # N knows every user the full build knows (the protocol keeps users whose friendships all went to the
    # test side) except those whose first friendship is among the events: they join through the log
    joins = np.setdiff1d(np.concatenate([tr.lo[day], tr.hi[day]]), np.concatenate([tr.lo[base], tr.hi[base]]))
    users_n = np.setdiff1d(np.arange(ids.size), joins)
    tmp, n_edges = _day_of_growth(ids, tr.lo, tr.hi, ts, base, day, users_n, args.cache, args.reuse)
    t_update, t_build = _update_and_full_build(tmp, n_edges, tr, cfg)
    users, n_truth = split.users, np.diff(split.truth_ptr)
    quality = {}
    for name in ("n1", "full"):
        m = Model.load(tmp / name)
        mids = np.asarray(m.graph.ids)
        pos = np.searchsorted(mids, ids[users])
        known = (pos < mids.size) & (mids[np.minimum(pos, mids.size - 1)] == ids[users])

        def protocol_lists(cand, count, known=known, mids=mids):
            """(U, L) model indices -> protocol indices (-1 past each list's end; unknown users: empty)."""
            out = np.full((users.size, cand.shape[1]), -1, np.int64)
            rows = np.flatnonzero(known)
            for i, r in enumerate(rows.tolist()):
                c = cand[i, :count[i]]
                out[r, :c.size] = np.searchsorted(ids, mids[c])
            return out

        q = m.index_of(ids[users[known]])
        ranked = m.recommend(q, 1000)
        stage1 = m.candidates(q, k=1000)
        metrics = ranking_metrics(hit_matrix(protocol_lists(ranked.cand, ranked.count), users.size, split.truth_ptr,
                                             split.truth_idx, ids.size), n_truth)
        s1 = micro_recall(hit_matrix(protocol_lists(stage1.cand, stage1.count), users.size, split.truth_ptr,
                                     split.truth_idx, ids.size), n_truth)
        quality[name] = {"stage1_recall@1000": round(s1, 4), **{k: round(v, 4) for k, v in metrics.items()},
                         "eval_users_unknown": int((~known).sum())}
    return {"dataset": str(args.dataset), "growth": args.growth, "users": int(ids.size),
            "edges_n": int(base.sum()), "events": int(day.sum()),
            "new_users": int(json.loads((tmp / "n1" / "model.json").read_text())["stages"]["graph"]["users"]
                             - users_n.size), "update_s": round(t_update, 2), "build_s": round(t_build, 2),
            "update_over_build": round(t_update / t_build, 3), "update": quality["n1"], "full_build": quality["full"]}


def run_scale(args) -> dict:
    import sys

    from benchmarks.proctree import run_measured

    pymk = str(Path(sys.executable).with_name("pymk"))
    rows = []
    for n in [int(x) for x in args.scale_users.split(",")]:
        tag = f"s{n}x{args.avg_degree:g}"
        edges = args.cache / f"{tag}.parquet"
        row = {"users": n}
        if not edges.exists():
            rc, wall, mem = run_measured([pymk, "synth", "--users", str(n), "--avg-degree", str(args.avg_degree),
                                          "--seed", "0", "--out", str(edges)], log_path=args.cache / f"{tag}.synth.log")
            if rc:
                raise SystemExit(f"synth {n} failed (rc {rc}); see {args.cache / f'{tag}.synth.log'}")
            row["synth"] = {"seconds": round(wall, 1), "peak_rss_gb": round(max(mem["processes"].values()) / 2**30, 2)}
        out = args.cache / f"m-{tag}"
        cmd = [pymk, "build", "--edges", str(edges), "--out", str(out), "--executor", "ray"]
        if args.config:
            cmd += ["--config", str(args.config)]
        log_path = args.cache / f"{tag}.build.log"
        rc, wall, mem = run_measured(cmd, log_path=log_path)
        if rc:
            raise SystemExit(f"build {n} failed (rc {rc}); see {log_path}")
        meta = json.loads((out / "model.json").read_text())
        procs = mem["processes"]
        top = next(iter(procs.items()))
        row["build"] = {"seconds": round(wall, 1), "edges": meta["stages"]["graph"]["edges"],
                        "peak_rss_gb_any_process": round(top[1] / 2**30, 2), "largest_process": top[0],
                        "tree_peak_gb": round(mem["tree_peak"] / 2**30, 2),
                        "stage_seconds": {k: v.get("seconds") for k, v in meta["stages"].items()},
                        "processes_over_1gb": {k: round(v / 2**30, 2) for k, v in procs.items() if v > 2**30}}
        print(json.dumps(row), flush=True)
        rows.append(row)
        shutil.rmtree(out, ignore_errors=True)
    xs = np.log([r["users"] for r in rows])
    ys = np.log([r["build"]["seconds"] for r in rows])
    exponent = float(np.polyfit(xs, ys, 1)[0]) if len(rows) > 1 else None
    report = {"rows": rows, "build_time_exponent": None if exponent is None else round(exponent, 3)}
    if args.plot:
        _plot_scale(rows, exponent, args.plot)
    return report


def _plot_scale(rows, exponent, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["users"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.loglog(n, [r["build"]["seconds"] for r in rows], "o-", label="pymk build --executor ray")
    if any("synth" in r for r in rows):
        a.loglog([r["users"] for r in rows if "synth" in r], [r["synth"]["seconds"] for r in rows if "synth" in r],
                 "s--", label="pymk synth")
    a.set_xlabel("users")
    a.set_ylabel("wall time (s)")
    a.set_title(f"wall time (build exponent {exponent:.2f})" if exponent is not None else "wall time")
    a.legend()
    b.plot(n, [r["build"]["peak_rss_gb_any_process"] for r in rows], "o-", label="largest process (build)")
    b.plot(n, [r["build"]["tree_peak_gb"] for r in rows], "^:", label="all processes together (build)")
    b.axhline(8, color="grey", lw=0.8, ls="--", label="8 GB per process")
    b.set_xscale("log")
    b.set_xlabel("users")
    b.set_ylabel("peak RSS (GB)")
    b.set_title("memory")
    b.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def run_infer(args, g) -> dict:
    """GNN batch inference over the whole graph: in process vs each layer's chunks as Ray tasks (same model,
    untrained: the cost does not depend on the weights), alternately twice; the embeddings compared."""
    import torch

    from pymk.gnn.config import GnnConfig
    from pymk.gnn.model import LinkEncoder, input_features
    from pymk.gnn.train import infer

    cfg = GnnConfig()
    torch.manual_seed(0)
    model = LinkEncoder(g.num_users, cfg)
    struct = torch.from_numpy(input_features(g, cfg))
    ray_ex = RayExecutor(args.ray_address)
    times: dict[str, list] = {"local": [], "ray": []}
    out = {}
    for _ in range(2):
        for name, ex in (("local", None), ("ray", ray_ex)):
            t = time.perf_counter()
            out[name] = infer(model, g, struct, executor=ex)
            times[name].append(time.perf_counter() - t)
    diff = float(np.abs(out["local"] - out["ray"]).max())
    report = {"users": g.num_users, "edges": g.num_edges, "dim": cfg.dim, "layers": cfg.layers,
              "ray": ray_ex.describe(), "max_abs_difference": diff,
              "seconds": {k: round(float(np.median(v)), 2) for k, v in times.items()}}
    report["ray_over_local"] = round(report["seconds"]["ray"] / report["seconds"]["local"], 2)
    ray_ex.close()
    return report


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--section", default="executor", choices=("executor", "update", "scale", "infer"))
    ap.add_argument("--scale-users", default="1000000,3000000,10000000")
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--config", type=Path)
    ap.add_argument("--growth", type=float, help="share of friendships replayed as the update's events "
                    "(default 0.005 on a synthetic graph, 0.05 on --dataset)")
    ap.add_argument("--dataset", type=Path, help="update section on a real edge file (protocol split, file order)")
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--avg-degree", type=float, default=20)
    ap.add_argument("--train-users", type=int, default=3000)
    ap.add_argument("--ray-address")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/pymk-bench"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--reuse", type=Path, help="update section: an earlier run's directory (same graph and "
                    "arguments): keep its version N and full build, time the update again")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.section == "update" and args.dataset:
        args.growth = args.growth or 0.05
        report = {"machine": f"{platform.node()} {os.cpu_count()} cores", "config": str(args.config),
                  **run_update_real(args)}
        print(json.dumps(report, indent=1))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        return
    args.growth = args.growth or 0.005
    if args.section == "scale":
        report = {"machine": f"{platform.node()} {os.cpu_count()} cores", "cores": os.cpu_count(),
                  "avg_degree": args.avg_degree, **run_scale(args)}
        print(json.dumps(report, indent=1))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        return
    g = load_graph(args.users, args.avg_degree, args.cache)
    if args.section == "infer":
        report = {"machine": f"{platform.node()} {os.cpu_count()} cores", **run_infer(args, g)}
        print(json.dumps(report, indent=1))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        return
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
