"""Peak resident memory of a command and every process it starts (Ray's raylet, workers, the GCS ...).

    from benchmarks.proctree import run_measured
    rc, wall_s, peaks = run_measured(["pymk", "build", ...], log_path=Path("build.log"))

A sampler thread reads /proc every `interval` seconds: the process tree under the command (children of
children, found through each process's parent id) and each process's VmRSS. `peaks` maps a process label
(`pid:name`) to the largest RSS seen, in bytes. Sampling can miss a spike shorter than the interval; the
command's own peak is also read from the kernel (`getrusage(RUSAGE_CHILDREN).ru_maxrss`, which is exact
for the largest child that has exited) and reported as `kernel_max_child_rss`.
"""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time
from pathlib import Path


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the name may hold spaces and parentheses: the parent id is the 2nd field after the last ')'
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _tree(root: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


def _rss_and_name(pid: int) -> tuple[int, str] | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    name, rss = "?", 0
    for line in text.splitlines():
        if line.startswith("Name:"):
            name = line.split(None, 1)[1].strip()
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return rss, name


def run_measured(cmd: list[str], *, log_path: Path | None = None, interval: float = 0.2,
                 env: dict | None = None) -> tuple[int, float, dict]:
    """Runs `cmd` to the end; returns (exit code, wall seconds, {"processes": {label: peak bytes},
    "tree_peak": largest sum over the tree at one sample, "kernel_max_child_rss": bytes})."""
    out = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    peaks: dict[str, int] = {}
    tree_peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            total = 0
            for pid in _tree(proc.pid):
                got = _rss_and_name(pid)
                if got is None:
                    continue
                rss, name = got
                total += rss
                label = f"{pid}:{name}"
                if rss > peaks.get(label, 0):
                    peaks[label] = rss
            tree_peak[0] = max(tree_peak[0], total)
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rc = proc.wait()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    if log_path:
        out.close()
    kernel = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return rc, wall, {"processes": dict(sorted(peaks.items(), key=lambda kv: -kv[1])), "tree_peak": tree_peak[0],
                      "kernel_max_child_rss": kernel}
