"""A deployment's versions: the lineage they share, the event log they share and which one is published.

    pymk build          -> version N      (starts a lineage: its id is N's version)
    pymk update N LOG   -> version N+1    (continues N's lineage; records how far into LOG it folded)
    pymk publish N+1    -> the lineage's pointer names N+1; every serving worker of the lineage swaps to it

Every version of one lineage reads and writes one event log: the Redis Stream `pymk:stream:<lineage>:edges`
with Redis, else a file (the first version's `DIR/stream/events.log`, or `PYMK_STREAM_LOG`; an updated
version records the file it was updated from). A version records in model.json `events.through`, the log
position its snapshot already holds; a worker serving it replays the log from there. So a change posted
while N+1 was being built, or while workers were swapping, is in the log after N+1's position and reaches
N+1 by replay: nothing acknowledged is lost by a swap, and publishing an older version (a rollback) works
the same way.

A file log made by the service starts with a header line naming its lineage (`# pymk-events lineage=ID`);
`pymk update` refuses a log whose header names another lineage.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pymk.pipeline.model import ModelError, model_version


def lineage(meta: dict) -> str:
    """The lineage id of a model: its first version's version string."""
    return meta.get("lineage") or model_version(meta)


def stream_key(lineage_id: str) -> str:
    """The Redis Stream every version of a lineage reads and writes."""
    return f"pymk:stream:{lineage_id}:edges"


def events_record(meta: dict) -> dict:
    """What model.json says of the log the version was updated from ({} for a built version):
    `log` (a file path or `redis:<key>`), `through` (the position its snapshot holds)."""
    return dict(meta.get("events") or {})


def file_log_path(model_dir: Path, meta: dict, override: str | None = None) -> Path:
    """The file event log a version's workers share: `override` (PYMK_STREAM_LOG), else the file it was
    updated from, else its own DIR/stream/events.log."""
    if override:
        return Path(override)
    log = events_record(meta).get("log", "")
    if log and not log.startswith("redis:"):
        return Path(log)
    return Path(model_dir) / "stream" / "events.log"


def start_position(meta: dict, log_name: str) -> str | None:
    """Where a worker serving this version starts replaying `log_name` (a resolved file path or
    `redis:<key>`): after what its snapshot holds when the version was updated from that log, else the start."""
    rec = events_record(meta)
    return rec.get("through") if rec.get("log") == log_name else None


def log_name(log) -> str:
    """The identity of an event log as model.json records it."""
    path = getattr(log, "path", None)
    return str(Path(path).resolve()) if path is not None else f"redis:{log.key}"


class LineageError(ModelError):
    """An event log or a published pointer that belongs to another lineage."""


def check_log_lineage(log, expected: str) -> None:
    """Refuses a file log whose header names another lineage (a log without a header is accepted)."""
    found = getattr(log, "lineage", None)
    if found is not None and found != expected:
        raise LineageError(f"event log {log_name(log)} belongs to model lineage {found}, not to this model's "
                           f"({expected}): give the log of the service that served this model")


class Pointer:
    """The published version of a lineage: a JSON record {model, version, lineage, at} in a file beside the
    lineage's file log (`published.json`), or in Redis (`pymk:deploy:<lineage>:published`).

    Args: lineage_id; path: the file log (file pointer) or None; client: a redis.Redis (Redis pointer)."""

    def __init__(self, lineage_id: str, *, log_path: Path | None = None, client=None):
        self.lineage = lineage_id
        self.client = client
        self.path = None if log_path is None else Path(log_path).parent / "published.json"
        self.key = f"pymk:deploy:{lineage_id}:published"

    @classmethod
    def of_model(cls, model_dir: Path, meta: dict, *, client=None, stream_log: str | None = None) -> Pointer:
        lin = lineage(meta)
        if client is not None:
            return cls(lin, client=client)
        return cls(lin, log_path=file_log_path(model_dir, meta, stream_log))

    def read(self) -> dict | None:
        """The published record, or None when nothing was published. Raises OSError / redis errors."""
        if self.client is not None:
            raw = self.client.get(self.key)
        else:
            try:
                raw = self.path.read_bytes()
            except FileNotFoundError:
                return None
        if not raw:
            return None
        rec = json.loads(raw)
        if rec.get("lineage") != self.lineage:
            raise LineageError(f"{self.where}: published record names lineage {rec.get('lineage')}, "
                               f"expected {self.lineage}")
        return rec

    def write(self, model_dir: Path, meta: dict) -> dict:
        """Names `model_dir` (a version of this lineage) as the one to serve."""
        if lineage(meta) != self.lineage:
            raise LineageError(f"{model_dir} is of lineage {lineage(meta)}, this pointer's is {self.lineage}")
        rec = {"model": str(Path(model_dir).resolve()), "version": model_version(meta), "lineage": self.lineage,
               "at": time.time()}
        raw = json.dumps(rec)
        if self.client is not None:
            self.client.set(self.key, raw)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(raw)
            os.replace(tmp, self.path)  # a reader sees the old record or the new one, never half
        return rec

    @property
    def where(self) -> str:
        return f"redis key {self.key}" if self.client is not None else str(self.path)
