"""The edge-event log: new friendships in arrival order, the source of truth the refreshers replay.

Two backends behind one interface (`append`, `read`):
- `FileEventLog` (embedded default): an append-only text file, one `src,dst,ts` line per event. Each
  append is one `write` on an `O_APPEND` descriptor, atomic for lines this short, so the workers of one
  `pymk serve --workers N` share a file; positions are byte offsets.
- `RedisEventLog`: a Redis Stream (`XADD` with an approximate `MAXLEN`, `XREAD` from a position), shared
  by every worker on every machine; positions are stream ids.

Every reader keeps its own position and applies every event (each serving worker is a replica of the
live graph and its embeddings); applying an edge twice is a no-op, so replays are safe.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("pymk.stream")


@dataclass(frozen=True)
class EdgeEvent:
    """A new friendship between external user ids at `ts` (unix seconds)."""

    src: int
    dst: int
    ts: float


class EventLogError(ValueError):
    pass


def _check(src, dst) -> tuple[int, int]:
    try:
        a, b = int(src), int(dst)
    except (TypeError, ValueError):
        raise EventLogError(f"edge event needs integer user ids, got src={src!r} dst={dst!r}") from None
    if a == b:
        raise EventLogError(f"edge event {a}-{b} is a self-loop")
    return a, b


class FileEventLog:
    """Args: path: the log file (created with its folder if absent)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.bad = 0

    def append(self, src: int, dst: int, ts: float | None = None) -> str:
        a, b = _check(src, dst)
        ts = time.time() if ts is None else float(ts)
        os.write(self._fd, f"{a},{b},{ts:.6f}\n".encode())
        return str(os.lseek(self._fd, 0, os.SEEK_CUR))

    def read(self, after: str | None = None, count: int = 10_000, block_ms: int = 0
             ) -> tuple[list[EdgeEvent], str]:
        """Up to `count` events after position `after` (None: from the start), and the position after
        them; waits up to block_ms for one.

        A line still being written (no newline yet) is left for the next read; an unreadable line is
        logged with its file and byte offset and skipped.
        """
        pos = int(after or 0)
        deadline = time.monotonic() + block_ms / 1000.0
        while True:
            out, pos = self._read(pos, count)
            if out or time.monotonic() >= deadline:
                return out, str(pos)
            time.sleep(min(0.01, max(deadline - time.monotonic(), 0)))

    def _read(self, pos: int, count: int) -> tuple[list[EdgeEvent], int]:
        out = []
        with open(self.path, "rb") as f:
            f.seek(pos)
            for line in f:
                if not line.endswith(b"\n"):
                    break
                pos += len(line)
                try:
                    a, b, ts = line.decode().strip().split(",")
                    a, b = _check(a, b)
                    out.append(EdgeEvent(a, b, float(ts)))
                except (ValueError, UnicodeDecodeError):
                    self.bad += 1
                    log.warning("%s at byte %d: unreadable edge event %r skipped", self.path, pos - len(line),
                                line[:80])
                if len(out) >= count:
                    break
        return out, pos

    def close(self) -> None:
        os.close(self._fd)


class RedisEventLog:
    """Args: client: a `redis.Redis` (reads block: give it a socket timeout above block_ms);
    key: the stream; maxlen: approximate cap on the events kept."""

    def __init__(self, client, key: str = "pymk:stream:edges", maxlen: int = 10_000_000):
        self.client = client
        self.key = key
        self.maxlen = maxlen
        self.bad = 0

    def append(self, src: int, dst: int, ts: float | None = None) -> str:
        a, b = _check(src, dst)
        ts = time.time() if ts is None else float(ts)
        eid = self.client.xadd(self.key, {"src": a, "dst": b, "ts": f"{ts:.6f}"}, maxlen=self.maxlen,
                               approximate=True)
        return eid.decode() if isinstance(eid, bytes) else str(eid)

    def read(self, after: str | None = None, count: int = 10_000, block_ms: int = 0
             ) -> tuple[list[EdgeEvent], str]:
        """As `FileEventLog.read`; positions are stream ids ("0-0": from the start)."""
        pos = after or "0-0"
        reply = self.client.xread({self.key: pos}, count=count, block=block_ms or None)
        out = []
        for _, entries in reply or ():
            for eid, fields in entries:
                pos = eid = eid.decode() if isinstance(eid, bytes) else str(eid)
                try:
                    f = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
                    a, b = _check(f["src"], f["dst"])
                    out.append(EdgeEvent(a, b, float(f["ts"])))
                except (KeyError, ValueError, UnicodeDecodeError):
                    self.bad += 1
                    log.warning("%s entry %s: unreadable edge event %r skipped", self.key, eid, fields)
        return out, pos

    def close(self) -> None:
        pass
