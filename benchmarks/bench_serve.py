"""Serving latency and throughput: `pymk serve` (one worker) with Redis, driven over HTTP on this machine.

    .venv/bin/python -m benchmarks.bench_serve --model DIR [--redis URL] [--json OUT]

DIR is a model from `pymk build` (the issue's case: the 1M-user synthetic graph, default config).
The benchmark publishes the model's serving state to Redis (`pymk publish`), drops this model version's
cached entries, starts `pymk serve --redis URL` on a free port, then measures, client side:
    uncached   distinct random users, one request at a time: every request runs the whole flow
    cache hit  the same users again
    throughput the same two with `--concurrency` clients (keep-alive connections)
    zipf       `--zipf-requests` requests whose users follow a Zipf law (exponent `--zipf`) over a
               random order of all users, from an empty cache: the hit rate a skewed workload reaches
and, server side, each step's share of the uncached time (from /metrics). `--json` writes the figures
`pymk capacity --measured` reads.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from pymk.pipeline.model import Model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """One keep-alive HTTP connection; `get(path)` returns (status, body, seconds)."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, path: str):
        t = time.perf_counter()
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        body = r.read()
        return r.status, body, time.perf_counter() - t


def run_requests(port: int, users, k: int, concurrency: int):
    """Requests every user once over `concurrency` connections. Returns (latencies s, cached flags, wall s)."""
    users = list(map(int, users))
    lat = np.zeros(len(users))
    cached = np.zeros(len(users), bool)
    errors = []
    nxt = iter(range(len(users)))
    lock = threading.Lock()

    def worker():
        c = Client(port)
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            status, body, dt = c.get(f"/v1/users/{users[i]}/recommendations?k={k}")
            if status != 200:
                errors.append((users[i], status, body[:200]))
                continue
            lat[i] = dt
            cached[i] = b'"cached":true' in body

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} failed requests, first: {errors[0]}")
    return lat, cached, wall


def step_sums(port: int) -> dict[str, float]:
    _, body, _ = Client(port).get("/metrics")
    return {m[0]: float(m[1]) for m in re.findall(r'pymk_step_seconds_sum\{step="(\w+)"\} ([0-9.e+-]+)', body.decode())}


def step_hist(port: int) -> dict[str, list[tuple[float, float]]]:
    """Each flow step's cumulative histogram buckets from the service's /metrics: step -> [(le s, count)]."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(Client(port).get("/metrics")[1].decode()):
        for s in fam.samples:
            if s.name == "pymk_step_seconds_bucket":
                out.setdefault(s.labels["step"], []).append((float(s.labels["le"]), s.value))
    return {k: sorted(v) for k, v in out.items()}


def pct(a, q) -> float:
    return float(np.percentile(a, q) * 1e3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--users", type=int, default=1000, help="distinct users of the uncached / hit phases")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--zipf", type=float, default=1.1)
    ap.add_argument("--zipf-requests", type=int, default=20000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    pymk = str(Path(sys.executable).parent / "pymk")
    import redis

    m = Model.load(args.model)
    n = m.graph.num_users
    t = time.perf_counter()
    subprocess.run([pymk, "publish", "--model", str(args.model), "--redis", args.redis], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    publish_s = time.perf_counter() - t
    r = redis.Redis.from_url(args.redis)

    def drop_cache():
        keys = list(r.scan_iter(f"pymk:rec:{m.version}:*", count=10_000))
        for i in range(0, len(keys), 10_000):
            r.delete(*keys[i:i + 10_000])

    drop_cache()
    port = free_port()
    server = subprocess.Popen([pymk, "serve", "--model", str(args.model), "--redis", args.redis, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            try:
                if Client(port).get("/readyz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit("server did not start: " + server.stderr.read().decode()[-2000:])
        rng = np.random.default_rng(0)
        users = m.graph.ids[rng.choice(n, 2 * args.users + 50, replace=False)]
        run_requests(port, users[-50:], args.k, 1)  # warm the server's code paths
        before, hist0 = step_sums(port), step_hist(port)
        un, c_un, _ = run_requests(port, users[: args.users], args.k, 1)
        after, hist1 = step_sums(port), step_hist(port)
        hit, c_hit, _ = run_requests(port, users[: args.users], args.k, 1)
        assert not c_un.any() and c_hit.all(), "phases did not get the cache state they measure"
        _, _, wall_un = run_requests(port, users[args.users: 2 * args.users], args.k, args.concurrency)
        _, _, wall_hit = run_requests(port, users[args.users: 2 * args.users], args.k, args.concurrency)
        steps = {s: after[s] - before.get(s, 0.0) for s in after}
        total = sum(steps.values())
        drop_cache()
        order = m.graph.ids[rng.permutation(n)]
        ranks = np.minimum(rng.zipf(args.zipf, args.zipf_requests), n) - 1
        z_lat, z_cached, z_wall = run_requests(port, order[ranks], args.k, args.concurrency)
    finally:
        server.terminate()
        server.wait(timeout=30)
    res = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, {platform.python_version()}",
        "model": str(args.model), "users": n, "edges": m.graph.num_edges, "ranker": m.ranker_kind, "k": args.k,
        "publish_s": publish_s,
        "uncached_ms": {"p50": pct(un, 50), "p99": pct(un, 99), "mean": float(un.mean() * 1e3)},
        "hit_ms": {"p50": pct(hit, 50), "p99": pct(hit, 99), "mean": float(hit.mean() * 1e3)},
        # every request's whole time, client side (`pymk report` draws their histogram)
        "request_ms": {"uncached": [round(float(x) * 1e3, 3) for x in un],
                       "hit": [round(float(x) * 1e3, 3) for x in hit]},
        "uncached_rps": args.users / wall_un, "hit_rps": args.users / wall_hit, "concurrency": args.concurrency,
        "step_share": {s: v / total for s, v in steps.items()},
        "step_ms": {s: v / args.users * 1e3 for s, v in steps.items()},
        # the uncached phase's requests by time in each step (cumulative buckets; `pymk report` draws them)
        "step_hist": {s: [(le, c - dict(hist0.get(s, [])).get(le, 0.0)) for le, c in b] for s, b in hist1.items()},
        "zipf": {"exponent": args.zipf, "requests": args.zipf_requests, "hit_rate": float(z_cached.mean()),
                 "p50_ms": pct(z_lat, 50), "p99_ms": pct(z_lat, 99), "rps": args.zipf_requests / z_wall},
    }
    print(f"{args.model}: {n:,} users, {m.graph.num_edges:,} edges, ranker {m.ranker_kind}, k={args.k}, "
          f"one worker, Redis {args.redis}; {res['machine']}")
    print(f"  publish to Redis: {publish_s:.1f} s")
    print(f"  uncached : p50 {res['uncached_ms']['p50']:6.2f} ms  p99 {res['uncached_ms']['p99']:6.2f} ms  "
          f"{res['uncached_rps']:7.1f} req/s at concurrency {args.concurrency}")
    print(f"  cache hit: p50 {res['hit_ms']['p50']:6.2f} ms  p99 {res['hit_ms']['p99']:6.2f} ms  "
          f"{res['hit_rps']:7.1f} req/s at concurrency {args.concurrency}")
    print(f"  hit / uncached p50: {res['hit_ms']['p50'] / res['uncached_ms']['p50']:.3f}x")
    print("  uncached time by step: " + ", ".join(f"{s} {res['step_ms'][s]:.2f} ms ({res['step_share'][s]:.0%})"
                                                  for s in sorted(steps, key=lambda s: -steps[s])))
    z = res["zipf"]
    print(f"  zipf({args.zipf}) over {n:,} users, {args.zipf_requests:,} requests from an empty cache: hit rate "
          f"{z['hit_rate']:.1%}, p50 {z['p50_ms']:.2f} ms, p99 {z['p99_ms']:.2f} ms, {z['rps']:.1f} req/s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
