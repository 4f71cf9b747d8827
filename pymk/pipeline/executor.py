"""Where the offline stages' chunked work runs: in this process (`local`, the default) or as Ray tasks (`ray`).

A stage hands an executor a module-level function `fn(shared, item)`, the objects every call reads
(`shared`: e.g. a split's graph, put once into Ray's object store and read zero-copy by the workers) and
the items (chunks of users); `map` returns the results in the items' order, so whatever the stage does
with them next (sampling, concatenation) is the same on both executors and the model they write is the
same. On Ray a task whose worker or node dies is retried on another (`max_retries`); a task that raises
fails the stage with the task's error, and the build, which writes beside its final directory, leaves no
half model behind.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any

EXECUTORS = ("local", "ray")


class ExecutorError(RuntimeError):
    """An executor that cannot run: an unknown kind, a Ray cluster that cannot be reached, a failed task."""


class LocalExecutor:
    """Runs every call in this process, in order."""

    kind = "local"

    def map(self, fn: Callable[[Any, Any], Any], items: Sequence, *, shared: Any = None) -> list:
        return [fn(shared, item) for item in items]

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"kind": self.kind}


PROBE_TIMEOUT_S = 5.0


def connect_ray(address: str | None) -> None:
    """`ray.init` at `address` (None: start a local cluster or join the one this machine runs).

    An address that takes no TCP connection is refused within `PROBE_TIMEOUT_S`: `ray.init` itself
    waits minutes for a GCS that is not there (measured: 5.5 min for 127.0.0.1:1).

    Raises:
        ExecutorError: naming the address and why it cannot be reached.
    """
    import ray

    if address not in (None, "", "auto", "local"):
        hostport = address.split("://", 1)[-1]
        host, sep, port = hostport.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ExecutorError(f"--ray-address {address!r} is not HOST:PORT (or ray://HOST:PORT)")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
        except OSError as exc:
            raise ExecutorError(f"cannot reach a Ray cluster at {address!r}: {exc}") from None
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ExecutorError(f"cannot reach a Ray cluster at {address!r}: {exc}") from None


class RayExecutor:
    """Runs each call as a Ray task on the cluster at `address` (or a local one it starts).

    Args:
        address: a Ray cluster address (`ray start --head` prints it); None: join the cluster this process
            is already connected to, else start a local one.
        max_retries: retries of a task whose worker process or node died.
        num_cpus: CPUs each task reserves.
    """

    kind = "ray"

    def __init__(self, address: str | None = None, *, max_retries: int = 3, num_cpus: float = 1.0):
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - ray is a dependency
            raise ExecutorError("--executor ray needs the `ray` package") from exc
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            connect_ray(address)
            self._started = True
        self.max_retries = max_retries
        self.num_cpus = num_cpus
        self._remote: dict = {}

    def map(self, fn: Callable[[Any, Any], Any], items: Sequence, *, shared: Any = None) -> list:
        ray = self._ray
        task = self._remote.get(fn)
        if task is None:
            task = self._remote[fn] = ray.remote(max_retries=self.max_retries, num_cpus=self.num_cpus)(fn)
        ref = ray.put(shared)
        try:
            return ray.get([task.remote(ref, item) for item in items])
        except ray.exceptions.RayTaskError as exc:
            raise ExecutorError(f"a Ray task of {fn.__name__} failed: {exc}") from exc
        except ray.exceptions.RayError as exc:  # a task lost more often than max_retries allows
            raise ExecutorError(f"Ray could not run {fn.__name__}: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()

    def describe(self) -> dict:
        nodes = [n for n in self._ray.nodes() if n.get("Alive")]
        return {"kind": self.kind, "nodes": len(nodes),
                "cpus": int(sum(n.get("Resources", {}).get("CPU", 0) for n in nodes))}


def remote(executor) -> bool:
    """Whether `executor` runs its calls outside this process (a stage then ships what they read)."""
    return executor is not None and executor.kind != "local"


def make_executor(kind: str = "local", *, address: str | None = None):
    """The executor of that kind (`EXECUTORS`)."""
    if kind == "local":
        if address is not None:
            raise ExecutorError("--ray-address needs --executor ray")
        return LocalExecutor()
    if kind == "ray":
        return RayExecutor(address)
    raise ExecutorError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")
