"""The nightly cycle on a running service: `pymk update` then `pymk publish`, under load, nothing lost.

    .venv/bin/python -m benchmarks.bench_publish [--users 1000000] [--avg-degree 20] [--rate 0.1]
        [--steady-s 30] [--cache /tmp/pymk-bench] [--json OUT] [--shards S --executor ray]

Version N is built from the synthetic graph (`pymk synth`, cached) with the default config; `pymk serve
--model N` (one worker, embedded stores) takes a closed-loop client: recommendation requests for random users,
with a share `--rate` of them friendships posted between random users instead. Phases: `steady` (--steady-s),
`update` (`pymk update --model N --events N/stream/events.log --out N1` runs beside the service), `swap`
(`pymk publish --model N1` until the worker has swapped: /metrics' pymk_model_swaps_total), `after`
(--steady-s on N+1). Reported per phase: requests, errors (non-200), latency p50 / p99 (ms); the update's and
the swap's wall time; the service's peak and last RSS per phase (two versions are held during the swap); and the check
that counts: every friendship the service acknowledged is in N+1's graph (/healthz edges against N's edges
plus the distinct acknowledged pairs N did not have).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from benchmarks.bench_fof import load_graph


def _get(url: str, data: bytes | None = None, method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Load:
    """Closed-loop client in a thread; `phase` labels each request."""

    def __init__(self, base: str, ids: np.ndarray, rate: float, pid: int):
        self.base, self.ids, self.rate, self.pid = base, ids, rate, pid
        self.phase = "steady"
        self.rows: list[tuple[str, int, float]] = []  # phase, status, seconds
        self.posted: set[tuple[int, int]] = set()
        self.rss: dict[str, int] = {}  # the largest RSS sampled in each phase
        self.last_rss: dict[str, int] = {}  # the last one
        self._stop = threading.Event()
        self._rng = np.random.default_rng(0)

    def run(self):
        while not self._stop.is_set():
            t = time.perf_counter()
            if self._rng.random() < self.rate:
                a, b = self._rng.choice(self.ids, 2, replace=False).tolist()
                status, _ = _get(f"{self.base}/v1/edges", json.dumps({"src": a, "dst": b}).encode(), "POST")
                if status == 200:
                    self.posted.add((min(a, b), max(a, b)))
            else:
                status, _ = _get(f"{self.base}/v1/users/{int(self._rng.choice(self.ids))}/recommendations?k=20")
            self.rows.append((self.phase, status, time.perf_counter() - t))
            rss = _rss(self.pid)
            self.rss[self.phase] = max(self.rss.get(self.phase, 0), rss)
            self.last_rss[self.phase] = rss

    def start(self):
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        out = {}
        for phase in ("steady", "update", "swap", "after"):
            rows = [r for r in self.rows if r[0] == phase]
            lat = np.array([r[2] for r in rows]) * 1000
            out[phase] = {"requests": len(rows), "errors": sum(r[1] != 200 for r in rows),
                          "p50_ms": round(float(np.percentile(lat, 50)), 2) if rows else None,
                          "p99_ms": round(float(np.percentile(lat, 99)), 2) if rows else None,
                          "peak_rss_gb": round(self.rss.get(phase, 0) / 2**30, 2),
                          "end_rss_gb": round(self.last_rss.get(phase, 0) / 2**30, 2)}
        return out


def _swaps(base: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = _get(f"{base}/metrics")[1].decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "pymk_model_swaps_total" and s.labels.get("result") == "ok")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--avg-degree", type=float, default=20)
    ap.add_argument("--rate", type=float, default=0.1, help="share of requests that post a friendship")
    ap.add_argument("--steady-s", type=float, default=30)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/pymk-bench"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--shards", type=int, default=0, help="build with --shards S (0: unsharded)")
    ap.add_argument("--executor", default="local", choices=["local", "ray"],
                    help="ray: the service is a ranking tier over Ray shard servers (needs --shards)")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    from pymk.graph.snapshot import CSRGraph
    from pymk.pipeline.build import build_from_edges
    from pymk.pipeline.model import model_version
    from pymk.pipeline.update import snapshot_edges

    g = load_graph(args.users, args.avg_degree, args.cache)
    work = args.cache / (f"publish-{args.users}" + (f"-s{args.shards}" if args.shards else ""))
    if work.exists():
        import shutil

        shutil.rmtree(work)
    t = time.perf_counter()
    from pymk.config import PymkConfig

    cfg = PymkConfig()
    if args.shards:
        cfg.sharding.shards = args.shards
    build_from_edges(snapshot_edges(g), work / "n", cfg, log=lambda s: print(s, flush=True))
    build_s = time.perf_counter() - t
    snap = CSRGraph.load(work / "n" / "graph")
    pymk = str(Path(sys.executable).parent / "pymk")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYMK_PUBLISH_POLL_S": "0.5"}
    log = open(work / "serve.log", "w")
    proc = subprocess.Popen([pymk, "serve", "--model", str(work / "n"), "--port", str(port),
                             "--executor", args.executor], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        while True:
            try:
                if _get(f"{base}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (work / "serve.log").read_text()
            time.sleep(0.2)
        load = Load(base, np.asarray(snap.ids)[: min(snap.num_users, 10**6)], args.rate, proc.pid)
        load.start()
        time.sleep(args.steady_s)  # a measurement window, not synchronisation
        load.phase = "update"
        t = time.perf_counter()
        res = subprocess.run([pymk, "update", "--model", str(work / "n"), "--events",
                              str(work / "n" / "stream" / "events.log"), "--out", str(work / "n1")],
                             capture_output=True, text=True)
        update_s = time.perf_counter() - t
        assert res.returncode == 0, res.stderr
        load.phase = "swap"
        t = time.perf_counter()
        res = subprocess.run([pymk, "publish", "--model", str(work / "n1")], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        while _swaps(base) < 1:
            assert proc.poll() is None and time.perf_counter() - t < 1800, (work / "serve.log").read_text()
            time.sleep(0.1)
        swap_s = time.perf_counter() - t
        load.phase = "after"
        time.sleep(args.steady_s)
        load.stop()
        health = json.loads(_get(f"{base}/healthz")[1])
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    new_pairs = 0
    ids = np.asarray(snap.ids)
    for a, b in load.posted:
        i, j = np.searchsorted(ids, [a, b])
        nb = snap.neighbors(int(i))
        k = np.searchsorted(nb, j)
        new_pairs += not (k < nb.size and nb[k] == j)
    v1 = json.loads((work / "n1" / "model.json").read_text())
    report = {"machine": f"{platform.node()} {os.cpu_count()} cores", "users": int(snap.num_users),
              "shards": args.shards, "executor": args.executor,
              "edges_n": int(snap.num_edges), "build_s": round(build_s, 1), "update_s": round(update_s, 1),
              "swap_s": round(swap_s, 1), "phases": load.summary(), "acknowledged_friendships": len(load.posted),
              "served_version_is_n1": health["model_version"] == model_version(v1),
              "edges_served": health["edges"], "edges_expected": int(snap.num_edges) + new_pairs}
    report["nothing_lost"] = report["edges_served"] == report["edges_expected"]
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
