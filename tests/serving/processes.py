"""`pymk serve` as a real process for tests: started, waited for, killed (SIGKILL or not) and restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.redis_server import _free_port

PYMK = str(Path(sys.executable).parent / "pymk")


def call(method: str, url: str, body: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
    """One HTTP call on a new connection; (status, JSON body)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw or b"{}")
        except ValueError:
            return e.code, {"raw": raw.decode(errors="replace")}


class ServeProcess:
    """Args: args: `pymk serve` arguments after `--port`; logpath: its output; env: extra environment."""

    def __init__(self, args: list[str], logpath: Path, env: dict | None = None):
        self.port = _free_port()
        self.args = args
        self.logpath = logpath
        self.env = {**os.environ, **(env or {})}
        self.base = f"http://127.0.0.1:{self.port}"
        self.starts = 0
        self.start()

    def start(self) -> None:
        self.starts += 1
        self.log = open(self.logpath, "a")
        self.proc = subprocess.Popen([PYMK, "serve", "--port", str(self.port), *self.args], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        deadline = time.monotonic() + 300
        while True:
            assert self.proc.poll() is None, self.logpath.read_text()[-4000:]
            assert time.monotonic() < deadline, "service did not become ready"
            try:
                if call("GET", f"{self.base}/readyz", timeout=5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)  # polling a process that is starting, not synchronising with it

    def kill(self) -> None:
        """SIGKILL to the whole process group: no handler runs, nothing is flushed."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.log.close()

    def health(self) -> dict:
        return call("GET", f"{self.base}/healthz")[1]
