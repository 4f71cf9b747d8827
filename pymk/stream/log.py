"""The event log: changes to the living graph in arrival order, the source of truth every worker replays.

An event is `op src dst ts`; ops (`OPS`): `add` (a friendship; the default, and all the log held before
ops existed), `remove` (an unfriending), `erase` (account erasure of `src`; `dst` repeats it), `block` and
`dismiss` (user actions, so every worker of a machine applies them without Redis). Ids are external.

Two backends behind one interface (`append`, `read`):
- `FileEventLog` (embedded default): an append-only text file, one `src,dst,ts[,op]` line per event. Each
  append is one `write` on an `O_APPEND` descriptor, atomic for lines this short, so the workers of one
  `pymk serve --workers N` share a file; positions are byte offsets. A log the service creates starts with
  a `# pymk-events lineage=ID` line (the model lineage it belongs to); `#` lines are not events.
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

HEADER = "# pymk-events lineage="  # a file log's first line, written by the service that creates it


CUT = b" #cut\n"  # ends a fragment a killed writer left (`FileEventLog`): never a readable event

OPS = ("add", "remove", "erase", "block", "dismiss", "hide", "show")  # hide / show: a user's discoverability


@dataclass(frozen=True)
class EdgeEvent:
    """A change between external user ids at `ts` (unix seconds): a new friendship unless `op` says."""

    src: int
    dst: int
    ts: float
    op: str = "add"


class EventLogError(ValueError):
    pass


def position_key(position: str | None) -> tuple[int, ...]:
    """A sortable key of a log position: a file's byte offset or a stream id 'ms-seq'."""
    if not position:
        return (0,)
    return tuple(int(x) for x in str(position).split("-"))


def _check(src, dst, op: str = "add") -> tuple[int, int]:
    if op not in OPS:
        raise EventLogError(f"unknown event op {op!r}; one of {', '.join(OPS)}")
    try:
        a, b = int(src), int(dst)
    except (TypeError, ValueError):
        raise EventLogError(f"edge event needs integer user ids, got src={src!r} dst={dst!r}") from None
    if a < 0 or b < 0:
        raise EventLogError(f"edge event {a}-{b}: user ids are non-negative")
    if op in ("erase", "hide", "show"):
        if a != b:
            raise EventLogError(f"{op} event names one user, got {a} and {b}")
    elif a == b:
        raise EventLogError(f"edge event {a}-{b} is a self-loop")
    return a, b


class FileEventLog:
    """Args: path: the log file (created with its folder if absent); lineage: the model lineage whose
    service writes it, put in a header line when this call creates the file (`pymk.pipeline.lineage`)."""

    def __init__(self, path: str | Path, lineage: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if lineage is not None and not self.path.exists():
            _create_with_header(self.path, f"{HEADER}{lineage}\n")
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._rfd = os.open(self.path, os.O_RDONLY)
        self.bad = 0
        self._terminate_partial_line()

    def _terminate_partial_line(self) -> None:
        """Ends a last line a killed writer left without its newline with `CUT`, so the next event appended
        starts a line of its own instead of joining that fragment, and the fragment is never read as an event
        (cut short, "123,45" would parse as the friendship 123-4): readers skip it, logged as unreadable.
        Appends are whole lines in one write, so a line without its newline is never one still being written."""
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._rfd, 1, size - 1) != b"\n":
            os.write(self._fd, CUT)
            log.warning("%s ended mid-line at byte %d (a writer stopped mid-event): the fragment is skipped",
                        self.path, size)

    @property
    def lineage(self) -> str | None:
        """The lineage named by the file's header line, or None (no header: a log written by hand)."""
        with open(self.path, "rb") as f:
            first = f.readline(4096)
        text = first.decode(errors="replace").strip()
        return text[len(HEADER):] if text.startswith(HEADER) else None

    def append(self, src: int, dst: int, ts: float | None = None, op: str = "add") -> str:
        a, b = _check(src, dst, op)
        ts = time.time() if ts is None else float(ts)
        os.write(self._fd, (f"{a},{b},{ts:.6f}\n" if op == "add" else f"{a},{b},{ts:.6f},{op}\n").encode())
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
                if line.startswith(b"#"):  # the header (or a comment)
                    continue
                try:
                    if line.endswith(CUT):
                        raise ValueError("a fragment a writer left when it stopped mid-line")
                    a, b, ts, *rest = line.decode().strip().split(",")
                    if len(rest) > 1:
                        raise ValueError("too many fields")
                    op = rest[0] if rest else "add"
                    a, b = _check(a, b, op)
                    out.append(EdgeEvent(a, b, float(ts), op))
                except (ValueError, UnicodeDecodeError):  # EventLogError is a ValueError
                    self.bad += 1
                    log.warning("%s at byte %d: unreadable edge event %r skipped", self.path, pos - len(line),
                                line[:80])
                if len(out) >= count:
                    break
        return out, pos

    def missing_after(self, position: str | None) -> str | None:
        """A file log keeps every event: nothing is ever missing (see `RedisEventLog.missing_after`)."""
        return None

    def end(self) -> str | None:
        """The position after the last whole line written so far (None: nothing written). A line without
        its newline (a writer killed mid-line) is not an event yet: a reader stops before it."""
        size = os.fstat(self._fd).st_size
        if not size:
            return None
        pos = size
        while pos > 0:  # back from the end, a page at a time, to the last newline
            start = max(pos - 4096, 0)
            cut = os.pread(self._rfd, pos - start, start).rfind(b"\n")
            if cut >= 0:
                return str(start + cut + 1)
            pos = start
        return None

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._rfd)


def _create_with_header(path: Path, header: str) -> None:
    """Creates `path` holding `header` unless it exists; atomic (a file linked into place), so that the
    workers starting together make one header, before any event."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
    tmp.write_text(header)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def _text(value) -> str:
    """A Redis reply field (bytes, or str from a decoding client) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def last_id(reply) -> str | None:
    """The stream id in an `XREVRANGE key + - COUNT 1` reply (None: an empty or absent stream)."""
    return _text(reply[0][0]) if reply else None


class RedisEventLog:
    """Args: client: a `redis.Redis` (reads block: give it a socket timeout above block_ms);
    key: the stream; maxlen: approximate cap on the events kept."""

    def __init__(self, client, key: str = "pymk:stream:edges", maxlen: int = 10_000_000):
        self.client = client
        self.key = key
        self.maxlen = maxlen
        self.bad = 0

    def append(self, src: int, dst: int, ts: float | None = None, op: str = "add") -> str:
        a, b = _check(src, dst, op)
        ts = time.time() if ts is None else float(ts)
        eid = self.client.xadd(self.key, {"src": a, "dst": b, "ts": f"{ts:.6f}", "op": op}, maxlen=self.maxlen,
                               approximate=True)
        return _text(eid)

    def read(self, after: str | None = None, count: int = 10_000, block_ms: int = 0
             ) -> tuple[list[EdgeEvent], str]:
        """As `FileEventLog.read`; positions are stream ids ("0-0": from the start)."""
        pos = after or "0-0"
        reply = self.client.xread({self.key: pos}, count=count, block=block_ms or None)
        out = []
        for _, entries in reply or ():
            for eid, fields in entries:
                pos = eid = _text(eid)
                try:
                    f = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
                    op = f.get("op", b"add")
                    op = _text(op)
                    a, b = _check(f["src"], f["dst"], op)
                    out.append(EdgeEvent(a, b, float(f["ts"]), op))
                except (KeyError, ValueError, UnicodeDecodeError):
                    self.bad += 1
                    log.warning("%s entry %s: unreadable edge event %r skipped", self.key, eid, fields)
        return out, pos

    def missing_after(self, position: str | None) -> str | None:
        """Why this stream can no longer give every event after `position` (None: it can). `MAXLEN` trims the
        oldest events; once any was trimmed, a position older than the stream's first event may have lost
        events after it. Conservative: a position that was itself the last event trimmed is reported too
        (the stream keeps no trace of which ids it dropped)."""
        try:
            info = self.client.xinfo_stream(self.key)
        except Exception as exc:  # noqa: BLE001 - no such stream: nothing was trimmed from it
            if "no such key" in str(exc).lower():
                return None
            raise
        dropped = int(info.get("entries-added", info.get("length", 0))) - int(info.get("length", 0))
        if dropped <= 0:
            return None
        first = info.get("first-entry")
        first_id = first[0] if first else info.get("last-generated-id")  # emptied: the last event ever added
        first_id = _text(first_id)
        if position and position_key(position) >= position_key(first_id):
            return None  # the position's own event is still here (or was the last one): nothing after it trimmed
        return (f"the event stream {self.key} dropped its {dropped:,} oldest events (MAXLEN {self.maxlen:,}) and "
                f"now starts at {first_id}, after position {position or 'its start'}: events after that "
                f"position may be gone")

    def end(self) -> str | None:
        """The id of the last event in the stream (None: an empty or absent stream)."""
        return last_id(self.client.xrevrange(self.key, count=1))

    def close(self) -> None:
        pass
