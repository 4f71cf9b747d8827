"""Edge-list ingestion: CSV, SNAP-style whitespace, their `.gz`, and Parquet -> validated int64 arrays.

Text files are parsed by a numba kernel in chunks (memory stays bounded by the chunk size plus the
output arrays), so a malformed row is reported with its exact file line and content, and
`skip_bad_rows=True` counts instead of stopping. Nothing is ever dropped silently: self-loops and
duplicates are counted in the `IngestReport` by `pymk.graph.edges.normalize_edges`.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit

CHUNK_BYTES = 64 << 20
BAD_KINDS = {1: "too few fields", 2: "non-integer id", 3: "id outside int64", 4: "non-integer ts"}
SRC_NAMES = ("src", "source", "from")
DST_NAMES = ("dst", "target", "to")
TS_NAMES = ("ts", "timestamp", "time")
MAX_EXAMPLES = 5


class IngestError(ValueError):
    """A malformed input row: names the file, the 1-based line (or Parquet row) and its content."""

    def __init__(self, path: str, line: int, reason: str, content: str):
        self.path, self.line, self.reason, self.content = path, line, reason, content
        super().__init__(f"{path}:{line}: {reason}: {content!r}")


@dataclass
class RawEdges:
    """Edges as read, before normalisation. Shapes: src, dst, ts: (rows,) int64; ts may be None."""

    src: np.ndarray
    dst: np.ndarray
    ts: np.ndarray | None
    source: str
    rows: int
    bad_rows: int = 0
    bad_by_kind: dict[str, int] = field(default_factory=dict)
    bad_examples: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------- kernel

@njit(cache=True, inline="always")
def _is_sep(c):
    return c == 32 or c == 9 or c == 44  # space, tab, comma


@njit(cache=True)
def _parse_int(buf, fs, fe, allow_frac):
    """Parses buf[fs:fe] as a signed int64. Returns (value, err): err 0 ok, 1 not an int, 2 overflow."""
    if fe - fs >= 2 and buf[fs] == 34 and buf[fe - 1] == 34:  # "quoted"
        fs += 1
        fe -= 1
    if fs >= fe:
        return 0, 1
    neg = False
    if buf[fs] == 45 or buf[fs] == 43:  # - +
        neg = buf[fs] == 45
        fs += 1
        if fs >= fe:
            return 0, 1
    limit = np.uint64(9223372036854775808) if neg else np.uint64(9223372036854775807)
    acc = np.uint64(0)
    i = fs
    while i < fe:
        c = buf[i]
        if c == 46 and allow_frac and i > fs:  # '.': keep the integer part of a fractional timestamp
            j = i + 1
            while j < fe:
                if buf[j] < 48 or buf[j] > 57:
                    return 0, 1
                j += 1
            break
        if c < 48 or c > 57:
            return 0, 1
        d = np.uint64(c - 48)
        if acc > (limit - d) // np.uint64(10):
            return 0, 2
        acc = acc * np.uint64(10) + d
        i += 1
    if neg:
        if acc == np.uint64(9223372036854775808):
            return np.int64(-9223372036854775807) - 1, 0
        return -np.int64(acc), 0
    return np.int64(acc), 0


@njit(cache=True)
def _parse_chunk(buf, src_col, dst_col, ts_col, skip_bad, out_src, out_dst, out_ts, bad_counts,
                 bad_lines):
    """Parses complete lines of `buf` into out_* arrays.

    Returns (n_out, n_lines, bad_line, bad_start, bad_end, n_examples): bad_line is the relative
    1-based line of the first bad row when not skipping (0 if none) and [bad_start, bad_end) its bytes.
    """
    n = buf.shape[0]
    need = max(src_col, max(dst_col, ts_col)) + 1
    pos = 0
    line = 0
    n_out = 0
    n_examples = 0
    while pos < n:
        start = pos
        end = pos
        while end < n and buf[end] != 10:
            end += 1
        pos = end + 1
        line += 1
        e = end
        if e > start and buf[e - 1] == 13:
            e -= 1
        s = start
        while s < e and (buf[s] == 32 or buf[s] == 9):
            s += 1
        if s == e or buf[s] == 35 or buf[s] == 37:  # blank, '#' or '%' comment
            continue
        fld = 0
        kind = 0
        vs = np.int64(0)
        vd = np.int64(0)
        vt = np.int64(0)
        i = s
        while i < e and fld < need:
            while i < e and _is_sep(buf[i]):
                i += 1
            if i >= e:
                break
            fs = i
            while i < e and not _is_sep(buf[i]):
                i += 1
            if fld == src_col or fld == dst_col or fld == ts_col:
                is_ts = fld == ts_col
                v, err = _parse_int(buf, fs, i, is_ts)
                if err != 0:
                    kind = 4 if is_ts else (2 if err == 1 else 3)
                    break
                if fld == src_col:
                    vs = v
                elif fld == dst_col:
                    vd = v
                else:
                    vt = v
            fld += 1
        if kind == 0 and fld < need:
            kind = 1
        if kind != 0:
            if not skip_bad:
                return n_out, line, line, start, e, 0
            bad_counts[kind] += 1
            if n_examples < bad_lines.shape[0]:
                bad_lines[n_examples, 0] = line
                bad_lines[n_examples, 1] = start
                bad_lines[n_examples, 2] = e
                n_examples += 1
            continue
        out_src[n_out] = vs
        out_dst[n_out] = vd
        out_ts[n_out] = vt
        n_out += 1
    return n_out, line, 0, 0, 0, n_examples


# ----------------------------------------------------------------------------------------- readers

def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _split_fields(text: str) -> list[str]:
    return text.replace(",", " ").replace("\t", " ").split()


def _is_int(tok: str) -> bool:
    t = tok.strip('"')
    return t.lstrip("+-").isdigit()


def _columns_from_header(fields: list[str]) -> tuple[int, int, int]:
    names = [f.strip().strip('"').lower() for f in fields]
    src = next((names.index(n) for n in SRC_NAMES if n in names), 0)
    dst = next((names.index(n) for n in DST_NAMES if n in names), 1 if src != 1 else 0)
    ts = next((names.index(n) for n in TS_NAMES if n in names), -1)
    return src, dst, ts


def read_text_edges(path: str | os.PathLike, *, skip_bad_rows: bool = False,
                    progress: Callable[[int], None] | None = None,
                    chunk_bytes: int = CHUNK_BYTES) -> RawEdges:
    """Reads a CSV or whitespace edge list (optionally gzipped).

    Args:
        path: the file. A first data line whose first field is not an integer is a header: columns
            named src/dst (or source/target, from/to) are used, else the first two; a column named
            ts/timestamp/time becomes the edge timestamp. Without a header: first two fields, no ts.
        skip_bad_rows: count and skip malformed rows instead of raising `IngestError`.
        progress: called with the number of bytes consumed after each chunk.
    """
    path = Path(path)
    src_col, dst_col, ts_col = 0, 1, -1
    parts_s, parts_d, parts_t = [], [], []
    bad_counts = np.zeros(5, np.int64)
    examples: list[str] = []
    rows = 0
    line_base = 0
    header_done = False
    carry = b""
    with _open_binary(path) as fh:
        while True:
            try:
                block = fh.read(chunk_bytes)
            except (EOFError, OSError, zlib.error) as exc:  # a truncated or corrupt gzip stream
                raise IngestError(str(path), line_base + 1, "unreadable compressed data at or after this line "
                                  "(a truncated or corrupt gzip file)", str(exc)) from None
            eof = not block
            data = carry + block
            if not eof:
                cut = data.rfind(b"\n")
                if cut < 0:
                    carry = data
                    continue
                carry, data = data[cut + 1:], data[:cut + 1]
            else:
                carry = b""
            if not header_done:
                data, skipped, header = _strip_header(data, eof)
                if header is None and not eof and skipped < 0:
                    carry = data + carry  # only comments/blank so far: need more data
                    continue
                header_done = True
                line_base += max(skipped, 0)
                if header is not None:
                    src_col, dst_col, ts_col = _columns_from_header(header)
            if data:
                buf = np.frombuffer(data, np.uint8)
                cap = int(np.count_nonzero(buf == 10)) + 1
                out_s = np.empty(cap, np.int64)
                out_d = np.empty(cap, np.int64)
                out_t = np.empty(cap, np.int64)
                ex = np.zeros((MAX_EXAMPLES, 3), np.int64)
                n_out, n_lines, bad_line, b0, b1, n_ex = _parse_chunk(
                    buf, src_col, dst_col, ts_col, skip_bad_rows, out_s, out_d, out_t, bad_counts, ex)
                if bad_line:
                    content = data[b0:b1].decode("utf-8", "replace")
                    reason = _bad_reason(buf, b0, b1, src_col, dst_col, ts_col)
                    raise IngestError(str(path), line_base + bad_line, reason, content)
                for j in range(n_ex):
                    if len(examples) < MAX_EXAMPLES:
                        txt = data[ex[j, 1]:ex[j, 2]].decode("utf-8", "replace")
                        examples.append(f"{path}:{line_base + int(ex[j, 0])}: {txt!r}")
                parts_s.append(out_s[:n_out])
                parts_d.append(out_d[:n_out])
                if ts_col >= 0:
                    parts_t.append(out_t[:n_out])
                rows += n_out
                line_base += n_lines
            if progress is not None:
                progress(len(block))
            if eof:
                break
    bad = {BAD_KINDS[k]: int(bad_counts[k]) for k in BAD_KINDS if bad_counts[k]}

    def cat(parts):
        return np.concatenate(parts) if parts else np.empty(0, np.int64)

    return RawEdges(cat(parts_s), cat(parts_d), cat(parts_t) if ts_col >= 0 else None, str(path),
                    rows + sum(bad.values()), int(sum(bad.values())), bad, examples)


def _bad_reason(buf, b0, b1, src_col, dst_col, ts_col) -> str:
    """Re-parses one rejected line to name its defect (cheap: only on the error path)."""
    counts = np.zeros(5, np.int64)
    z = np.zeros(1, np.int64)
    _parse_chunk(buf[b0:b1], src_col, dst_col, ts_col, True, z, z, z, counts, np.zeros((1, 3), np.int64))
    kinds = [BAD_KINDS[k] for k in BAD_KINDS if counts[k]]
    return kinds[0] if kinds else "malformed row"


def _strip_header(data: bytes, eof: bool) -> tuple[bytes, int, list[str] | None]:
    """Finds the first data line. Returns (data from that line on or after the header, lines skipped,
    header fields or None). Lines skipped is -1 when no data line was found in `data` yet."""
    pos = 0
    line = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl
        text = data[pos:end].decode("utf-8", "replace").strip()
        line += 1
        if text and text[0] not in "#%":
            fields = _split_fields(text)
            if not _is_int(fields[0]):
                return data[end + 1:] if nl >= 0 else b"", line, fields
            return data[pos:], line - 1, None
        if nl < 0:
            break
        pos = nl + 1
    return (b"", line, None) if eof else (data, -1, None)


def read_parquet_edges(path: str | os.PathLike) -> RawEdges:
    """Reads a Parquet edge list: columns src/dst (or the first two) and an optional ts column."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        return _read_parquet(path, pa, pc, pq)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise IngestError(str(path), 0, "not a readable Parquet file", str(exc)) from None


def _read_parquet(path: Path, pa, pc, pq) -> RawEdges:
    schema = pq.read_schema(path)
    src_col, dst_col, ts_col = _columns_from_header(list(schema.names))
    names = [schema.names[src_col], schema.names[dst_col]] + ([schema.names[ts_col]] if ts_col >= 0 else [])
    pf = pq.ParquetFile(path)
    rows = pf.metadata.num_rows
    # row group by row group into the final arrays: the file's columns are never held twice
    arrays = [np.empty(rows, np.int64) for _ in names]
    at = 0
    for g in range(pf.num_row_groups):  # row group by row group, as `pymk.graph.chunked` reads them on tasks
        for part in parquet_group_ints(pf, g, names, path, at, pa, pc):
            for out, col in zip(arrays, part, strict=True):
                out[at:at + col.size] = col
            at += part[0].size
    ts = arrays[2] if ts_col >= 0 else None
    return RawEdges(arrays[0], arrays[1], ts, str(path), len(arrays[0]))


def parquet_group_ints(pf, group: int, names: list[str], path: Path, at: int, pa, pc):
    """The columns `names` (src, dst, then ts) of one row group as int64 arrays, in batches of up to 2**20 rows
    (`at`: the group's first row in the file). Yields one list of arrays per batch."""
    for batch in pf.iter_batches(row_groups=[group], columns=names, batch_size=1 << 20):
        yield [_column_ints(batch.column(name), name, path, at, j == 2, pa, pc) for j, name in enumerate(names)]
        at += batch.num_rows


_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_I64 = 2.0 ** 63


def _column_ints(col, name: str, path: Path, at: int, is_ts: bool, pa, pc) -> np.ndarray:
    """One batch of a Parquet column as int64, by the text formats' rules: ids are whole numbers within int64
    (integer columns; floating ones holding whole numbers; strings of an optional sign and digits, optionally
    quoted); a `ts` may also be fractional (its integer part is kept, as in text), an Arrow timestamp or a date
    (`_as_seconds`). Anything else raises `IngestError` naming the column and the 0-based row of its first bad
    value (`at`: the batch's first row)."""
    t = col.type

    def bad(i: int, why: str, value) -> IngestError:
        return IngestError(str(path), at + i, f"{why} in column {name!r}", repr(value))

    if col.null_count:
        i = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise bad(i, "missing value", None)
    if is_ts and (pa.types.is_timestamp(t) or pa.types.is_date(t)):
        return _as_seconds(col, pa, pc)
    if pa.types.is_integer(t):
        v = col.to_numpy(zero_copy_only=False)
        if v.dtype == np.uint64 and (over := np.flatnonzero(v > np.uint64(2 ** 63 - 1))).size:
            raise bad(int(over[0]), "value outside int64", int(v[over[0]]))
        return v.astype(np.int64)
    if pa.types.is_floating(t):
        v = col.to_numpy(zero_copy_only=False).astype(np.float64)
        whole = np.trunc(v) if is_ts else v
        wrong = ~np.isfinite(v) | (whole != np.trunc(whole)) | (whole >= _I64) | (whole < -_I64)
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            raise bad(i, "non-integer or out-of-range value", float(v[i]))
        return whole.astype(np.int64)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        try:  # plain digits (Arrow's own cast also takes "0x10", which the text rules do not): at Arrow's speed
            if pc.all(pc.match_substring_regex(col, r"^-?[0-9]+$")).as_py():
                return pc.cast(col, pa.int64()).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # out of range: found and named below
        out = np.empty(len(col), np.int64)
        for i, text in enumerate(col.to_pylist()):
            value = _text_int(text, is_ts)
            if value is None:
                raise bad(i, "non-integer or out-of-range value", text)
            out[i] = value
        return out
    raise IngestError(str(path), at, f"column {name!r} holds {t}: ids must be integers (or strings of digits)"
                      + (", a ts also a timestamp or date" if is_ts else ""), str(t))


def _text_int(text: str, frac: bool) -> int | None:
    """A text field as the text reader parses it (`_parse_int`): optional quotes and sign, digits, and for a ts
    an optional fraction that is dropped; None when it is not one or falls outside int64."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1]
    sign = -1 if text[:1] == "-" else 1
    body = text[1:] if text[:1] in "+-" else text
    if frac and "." in body:
        body, _, rest = body.partition(".")
        if not body or not (rest == "" or rest.isdigit() and rest.isascii()):
            return None
    if not body or not (body.isdigit() and body.isascii()):
        return None
    value = sign * int(body)
    return value if -(1 << 63) <= value < (1 << 63) else None


def _as_seconds(col, pa, pc) -> np.ndarray:
    """A `ts` column as int64 unix seconds: integers as they are; Arrow timestamps (any unit, any zone: they are
    stored as UTC) and dates converted, where a plain int64 cast would give milliseconds, micro- or nanoseconds
    or days."""
    t = col.type
    if pa.types.is_timestamp(t):
        return np.floor_divide(pc.cast(col, pa.int64()).to_numpy(), _PER_SECOND[t.unit])
    if pa.types.is_date(t):
        return pc.cast(pc.cast(col, pa.timestamp("s")), pa.int64()).to_numpy()
    return pc.cast(col, pa.int64()).to_numpy()


def read_edges(path: str | os.PathLike, *, skip_bad_rows: bool = False,
               progress: Callable[[int], None] | None = None) -> RawEdges:
    """Reads any supported edge file, chosen by extension (.parquet/.pq, else text, .gz allowed)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"edge file not found: {p}")
    if p.suffix in (".parquet", ".pq"):
        return read_parquet_edges(p)
    return read_text_edges(p, skip_bad_rows=skip_bad_rows, progress=progress)
