"""Load soak: `pymk serve` (one worker, with Redis) under a steady mixed load for minutes.

    .venv/bin/python -m benchmarks.soak --model DIR [--minutes 10] [--load 0.8] [--json OUT] [--plot PNG]

The benchmark starts its own `redis-server` (nothing on disk), publishes the model to it, starts
`pymk serve --redis`, then:
    max      a closed loop of `--concurrency` clients for `--max-seconds` on the mix below (client and server
             share this machine), counted over its second half; then open loops at rising shares of it for
             `--step-seconds` each until p99 leaves the budget: the highest rate within it is the maximum the
             soak's share applies to. (The closed loop's figure cannot be held open loop: at 80% of it, 190 and
             180 req/s at 1M users, the service fell behind within 1-3 minutes, fence on or off.);
    soak     an open loop at `--load` x that rate for `--minutes`: requests are sent on a fixed schedule (a
             Poisson process) whatever the service's pace, and each latency counts from the request's
             scheduled time, so a stall shows as the queue it builds (no coordinated omission).
The mix: 90% reads of `GET /v1/users/{id}/recommendations` for users drawn from a Zipf law (exponent `--zipf`)
over a random order of all users, 10% writes (`POST /v1/edges` between a Zipf user and a uniform one; a tenth of
them blocks). The server's RSS (every process under it) is sampled each second.

Reported: per minute p50 / p99 / errors / RSS; RSS growth between minute 2 and the last minute (means of each);
with `--plot`, latency (p50, p99 per 10 s) and RSS over time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_serve import free_port
from benchmarks.proctree import _rss_and_name, _tree
from pymk.pipeline.model import Model


class Conn:
    """A keep-alive connection that reconnects after an error."""

    def __init__(self, port: int):
        self.port = port
        self.conn = None

    def send(self, method: str, path: str, body: bytes | None = None) -> int:
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
                r = self.conn.getresponse()
                r.read()
                return r.status
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    return 0
        return 0


class Mix:
    """The request mix, drawn ahead from one seeded generator. Each item: (method, path, body, kind)."""

    def __init__(self, ids: np.ndarray, zipf: float, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.order = ids[self.rng.permutation(ids.size)]
        self.ids = ids
        self.zipf = zipf

    def draw(self, n: int) -> list[tuple]:
        rng, n_users = self.rng, self.order.size
        users = self.order[np.minimum(rng.zipf(self.zipf, n), n_users) - 1]
        other = self.ids[rng.integers(0, n_users, n)]
        roll = rng.random(n)
        out = []
        for u, o, r in zip(users.tolist(), other.tolist(), roll.tolist(), strict=True):
            if r >= 0.1 or u == o:
                out.append(("GET", f"/v1/users/{u}/recommendations?k=20", None, "read"))
            elif r < 0.01:
                out.append(("POST", f"/v1/users/{u}/blocks", json.dumps({"blocked_id": o}).encode(), "block"))
            else:
                out.append(("POST", "/v1/edges", json.dumps({"src": u, "dst": o}).encode(), "edge"))
        return out


def server_counters(port: int) -> dict[str, float]:
    """Cumulative counters from the service's /metrics: cache hits and misses, seconds and counts per step,
    stream events applied."""
    from prometheus_client.parser import text_string_to_metric_families

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "pymk_cache_requests_total":
                out[f"cache_{s.labels['result']}"] = s.value
            elif s.name in ("pymk_step_seconds_sum", "pymk_step_seconds_count"):
                out[f"{s.labels['step']}_{s.name.rsplit('_', 1)[-1]}"] = s.value
            elif s.name == "pymk_stream_events_total":
                out["stream_events"] = s.value
    return out


def closed_loop(port: int, mix: Mix, concurrency: int, seconds: float) -> float:
    """Requests per second answered by `concurrency` clients sending back to back, over the second half of
    `seconds` (the first half brings the cache and the live graph to the mix's steady state: writes keep
    invalidating the lists around popular users, so a fresh service answers faster than a soaked one)."""
    start = time.monotonic()
    half, stop = start + seconds / 2, start + seconds
    counts = [0] * concurrency

    def client(i):
        c = Conn(port)
        while time.monotonic() < stop:
            for method, path, body, _ in mix_chunks.get():
                c.send(method, path, body)
                if half <= time.monotonic() < stop:
                    counts[i] += 1

    mix_chunks: queue.Queue = queue.Queue()
    for _ in range(int(seconds * 2000 / 100)):
        mix_chunks.put(mix.draw(100))
    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return sum(counts) / (stop - half)


def open_loop(port: int, mix: Mix, rate: float, seconds: float, senders: int, server_pid: int):
    """Sends at `rate` per second for `seconds` on a Poisson schedule. Returns per-request arrays
    (scheduled time from start, latency s, status, kind) and RSS samples (time, bytes)."""
    rng = np.random.default_rng(1)
    gaps = rng.exponential(1.0 / rate, int(rate * seconds * 1.2) + 100)
    sched = np.cumsum(gaps)
    sched = sched[sched < seconds]
    n = sched.size
    items = mix.draw(n)
    lat = np.full(n, np.nan)
    status = np.zeros(n, np.int32)
    todo: queue.Queue = queue.Queue()
    t0 = time.monotonic() + 0.5

    def sender():
        c = Conn(port)
        while True:
            i = todo.get()
            if i is None:
                return
            wait = t0 + sched[i] - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # the schedule, not synchronisation: the request is due then
            method, path, body, _ = items[i]
            status[i] = c.send(method, path, body)
            lat[i] = time.monotonic() - (t0 + sched[i])

    rss: list[tuple[float, int]] = []
    scrapes: list[tuple[float, dict]] = []
    done = threading.Event()

    def sample():
        tick = 0
        while not done.wait(1.0):
            total = 0
            for pid in _tree(server_pid):
                got = _rss_and_name(pid)
                total += got[0] if got else 0
            rss.append((time.monotonic() - t0, total))
            tick += 1
            if tick % 10 == 0:  # the server's own counters, every 10 s: where its time goes as the soak goes on
                try:
                    scrapes.append((time.monotonic() - t0, server_counters(port)))
                except OSError:
                    pass

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(senders)]
    for th in threads:
        th.start()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for i in range(n):  # handed out in schedule order; a free sender takes the next due request
        todo.put(i)
    for _ in threads:
        todo.put(None)
    for th in threads:
        th.join()
    done.set()
    sampler.join()
    return sched, lat, status, [k for *_, k in items], rss, scrapes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--load", type=float, default=0.8, help="fraction of the measured maximum throughput")
    ap.add_argument("--rate", type=float, help="requests per second of the soak (skips the maximum's measurement)")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="closed loop; the rate is its second half's")
    ap.add_argument("--step-seconds", type=float, default=40.0, help="each open-loop step of the maximum's search")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1, help="`pymk serve --workers`: processes behind one port")
    ap.add_argument("--senders", type=int, default=16, help="client threads of the open loop")
    ap.add_argument("--zipf", type=float, default=1.1)
    ap.add_argument("--budget-ms", type=float, default=50.0, help="the serving budget p99 is held to")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args()
    pymk = str(Path(sys.executable).parent / "pymk")
    m = Model.load(args.model)
    ids = np.asarray(m.graph.ids)
    work = Path(tempfile.mkdtemp(prefix="pymk-soak-"))
    rport = free_port()
    redis_proc = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--dir", str(work),
                                   "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{rport}/0"
    model = work / "model"  # a copy: the soak's writes go to its own event log, not the model's
    shutil.copytree(args.model, model, ignore=shutil.ignore_patterns("stream"))
    port = free_port()
    server = None
    try:
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(rport), "ping"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        subprocess.run([pymk, "publish", "--model", str(model), "--redis", url], check=True, capture_output=True)
        server = subprocess.Popen([pymk, "serve", "--model", str(model), "--redis", url, "--port", str(port),
                                   "--workers", str(args.workers)],
                                  stdout=open(work / "serve.log", "w"), stderr=subprocess.STDOUT)
        for _ in range(1200):
            try:
                if Conn(port).send("GET", "/readyz") == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        mix = Mix(ids, args.zipf)
        closed_loop(port, mix, args.concurrency, 10)  # warm: code paths and the cache's head
        max_rps = closed_loop(port, mix, args.concurrency, args.max_seconds) if args.rate is None else float("nan")
        steps = []
        sustained = float("nan")
        if args.rate is None:  # the open loop's own maximum: rising rates until p99 leaves the budget
            for share in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
                r = share * max_rps
                _, s_lat, s_status, *_ = open_loop(port, mix, r, args.step_seconds, args.senders, server.pid)
                p99 = float(np.nanpercentile(s_lat, 99) * 1e3)
                steps.append({"rate": r, "p99_ms": p99, "errors": int((s_status != 200).sum())})
                print(f"  open loop at {r:6.1f} req/s for {args.step_seconds:g} s: p99 {p99:8.2f} ms", flush=True)
                if p99 > args.budget_ms or steps[-1]["errors"]:
                    break
                sustained = r
        rate = args.rate if args.rate is not None else args.load * sustained
        print(f"max throughput: closed loop ({args.concurrency} clients) {max_rps:.1f} req/s, open loop within the "
              f"budget {sustained:.1f} req/s; soak at {rate:.1f} req/s for {args.minutes:g} min", flush=True)
        sched, lat, status, kinds, rss, scrapes = open_loop(port, mix, rate, args.minutes * 60, args.senders,
                                                            server.pid)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
        redis_proc.terminate()
        redis_proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    kinds = np.array(kinds)
    errors = int((status != 200).sum())
    minutes = []
    rss_t = np.array([t for t, _ in rss])
    rss_b = np.array([b for _, b in rss], float)
    for i in range(int(np.ceil(args.minutes))):
        sel = (sched >= 60 * i) & (sched < 60 * (i + 1))
        in_min = (rss_t >= 60 * i) & (rss_t < 60 * (i + 1))
        minutes.append({"minute": i + 1, "requests": int(sel.sum()), "errors": int((status[sel] != 200).sum()),
                        "p50_ms": float(np.nanpercentile(lat[sel], 50) * 1e3),
                        "p99_ms": float(np.nanpercentile(lat[sel], 99) * 1e3),
                        "rss_mb": float(rss_b[in_min].mean() / 2**20) if in_min.any() else float("nan")})
    for x in minutes:  # the server's view of each minute, from the 10 s scrapes around it
        lo, hi = 60 * (x["minute"] - 1), 60 * x["minute"]
        a = max((sc for sc in scrapes if sc[0] <= lo + 5), key=lambda sc: sc[0], default=None)
        b = max((sc for sc in scrapes if sc[0] <= hi + 5), key=lambda sc: sc[0], default=None)
        if a is None or b is None or a is b:
            continue
        d = {k: b[1].get(k, 0.0) - a[1].get(k, 0.0) for k in b[1]}
        looked = d.get("cache_hit", 0.0) + d.get("cache_miss", 0.0)
        x["hit_rate"] = d.get("cache_hit", 0.0) / looked if looked else None
        x["step_ms"] = {k[:-4]: 1e3 * d[k] / d[k[:-4] + "_count"] for k in d
                        if k.endswith("_sum") and d.get(k[:-4] + "_count")}
        x["server_busy_s"] = sum(d[k] for k in d if k.endswith("_sum"))
    windows = []  # the p99 of every 10 s of the soak: "within the budget throughout" at a finer grain
    for lo in range(0, int(args.minutes * 60), 10):
        sel = (sched >= lo) & (sched < lo + 10)
        if sel.any():
            windows.append({"start_s": lo, "requests": int(sel.sum()),
                            "p99_ms": float(np.nanpercentile(lat[sel], 99) * 1e3)})
    over = [w for w in windows if w["p99_ms"] > args.budget_ms]
    last = minutes[-1]["rss_mb"]
    growth = last / minutes[1]["rss_mb"] - 1 if len(minutes) > 1 else float("nan")
    res = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, {platform.python_version()}",
        "model": str(args.model), "users": int(ids.size), "edges": m.graph.num_edges, "ranker": m.ranker_kind,
        "workers": args.workers, "max_rps": max_rps, "open_loop_steps": steps, "sustained_rps": sustained, "rate": rate,
        "minutes": minutes, "requests": int(sched.size), "errors": errors,
        "writes": int((kinds != "read").sum()),
        "p50_ms": float(np.nanpercentile(lat, 50) * 1e3), "p99_ms": float(np.nanpercentile(lat, 99) * 1e3),
        "worst_minute_p99_ms": max(x["p99_ms"] for x in minutes), "rss_growth_min2_to_last": growth,
        "budget_ms": args.budget_ms, "windows_10s": windows, "windows_10s_over_budget": len(over),
    }
    print(f"{res['requests']:,} requests ({res['writes']:,} writes), {errors} errors; p50 {res['p50_ms']:.2f} ms, "
          f"p99 {res['p99_ms']:.2f} ms, worst minute's p99 {res['worst_minute_p99_ms']:.2f} ms (budget "
          f"{args.budget_ms:g}); RSS minute 2 -> last: {growth:+.2%}; 10-s windows over the budget: {len(over)} of "
          f"{len(windows)}")
    for w in over:
        print(f"  10 s from {w['start_s']} s: p99 {w['p99_ms']:.1f} ms over {w['requests']} requests")
    for x in minutes:
        extra = ""
        if x.get("step_ms"):
            top = sorted(x["step_ms"].items(), key=lambda kv: -kv[1])[:4]
            extra = (f", hit rate {x['hit_rate']:.1%}, flow busy {x['server_busy_s']:.1f} s; "
                     + ", ".join(f"{k} {v:.2f} ms" for k, v in top))
        print(f"  minute {x['minute']:2d}: {x['requests']:6,} requests, {x['errors']} errors, p50 {x['p50_ms']:6.2f} "
              f"ms, p99 {x['p99_ms']:7.2f} ms, RSS {x['rss_mb']:7.1f} MB{extra}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        edges = np.arange(0, args.minutes * 60 + 10, 10)
        mid, p50, p99 = [], [], []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            sel = (sched >= lo) & (sched < hi)
            if sel.any():
                mid.append((lo + hi) / 120)
                p50.append(np.nanpercentile(lat[sel], 50) * 1e3)
                p99.append(np.nanpercentile(lat[sel], 99) * 1e3)
        fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
        a1.plot(mid, p50, label="p50")
        a1.plot(mid, p99, label="p99")
        a1.axhline(args.budget_ms, color="grey", ls="--", label=f"budget {args.budget_ms:g} ms")
        a1.set_ylabel("latency per 10 s (ms)")
        a1.legend()
        how = f"{args.load:.0%} of {sustained:.0f}" if args.rate is None else "--rate"
        a1.set_title(f"soak: {rate:.0f} req/s ({how}), {ids.size:,} users, 10% writes")
        a2.plot(rss_t / 60, rss_b / 2**20)
        a2.set_ylabel("server RSS (MB)")
        a2.set_xlabel("minute")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)


if __name__ == "__main__":
    main()
