"""Reading an edge file in chunks on an executor: each chunk parsed by its own task, on any node.

The sequential readers (`pymk.graph.ingest`) parse a file front to back in one process. Here the file is cut
into chunks the executor reads in parallel (`LocalExecutor` one after another, `RayExecutor` as tasks on the
cluster's nodes, each opening the file itself: every node must see it):
    text      byte ranges of ~`chunk_bytes`: a task owns the lines that start in its range (the line that
              crosses its end included), found from the bytes alone; the header and the comment lines before
              it are read once by the driver;
    Parquet   ranges of row groups.
Each task returns its rows and its bad-row counts with line numbers relative to its first line; the driver
puts the chunks back in file order, so the result is the sequential reader's exactly: the same rows in the
same order, the same counts, the same first bad line (file and 1-based line for text, 0-based row for
Parquet) named in the same error. A gzip file cannot be cut by bytes: it is read sequentially.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pymk.graph import ingest as I

CHUNK_BYTES = 64 << 20
HEAD_BYTES = 1 << 20  # where the driver looks for the header


def read_edges_chunked(path: str | os.PathLike, executor, *, skip_bad_rows: bool = False,
                       chunk_bytes: int = CHUNK_BYTES) -> I.RawEdges:
    """`pymk.graph.ingest.read_edges`, its chunks read by `executor`. Same result, same errors."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"edge file {path} does not exist")
    if path.suffix in (".parquet", ".pq"):
        return _parquet(path, executor)
    if path.suffix == ".gz":
        return I.read_edges(path, skip_bad_rows=skip_bad_rows)
    return _text(path, executor, skip_bad_rows, max(int(chunk_bytes), 1))


# ----------------------------------------------------------------------------------------- text

def _text(path: Path, executor, skip_bad_rows: bool, chunk_bytes: int) -> I.RawEdges:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(min(size, HEAD_BYTES))
    if len(head) < size:  # whole lines only, as the sequential reader looks at them
        head = head[:head.rfind(b"\n") + 1]
    data, skipped, header = I._strip_header(head, len(head) == size)
    if skipped < 0 and len(head) < size:  # comments beyond the first MB before any data: front to back
        return I.read_text_edges(path, skip_bad_rows=skip_bad_rows)
    start = len(head) - len(data)  # the first data line's byte (after the header, if any)
    cols = I._columns_from_header(header) if header is not None else (0, 1, -1)
    bounds = list(range(start, size, chunk_bytes)) + [size]
    spans = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)] or [(start, start)]
    parts = executor.map(_text_task, spans, shared=(str(path), start, cols, skip_bad_rows))
    line_base = max(skipped, 0)
    bad_counts = np.zeros(5, np.int64)
    examples: list[str] = []
    for part in parts:
        if part["bad"] is not None:
            line, reason, content = part["bad"]
            raise I.IngestError(str(path), line_base + line, reason, content)
        bad_counts += part["bad_counts"]
        examples += [f"{path}:{line_base + line}: {text!r}" for line, text in part["examples"]]
        line_base += part["lines"]
    bad = {I.BAD_KINDS[k]: int(bad_counts[k]) for k in I.BAD_KINDS if bad_counts[k]}
    src, dst, ts = (np.concatenate([p[k] for p in parts]) for k in ("src", "dst", "ts"))
    return I.RawEdges(src, dst, ts if cols[2] >= 0 else None, str(path), int(src.size) + sum(bad.values()),
                      int(sum(bad.values())), bad, examples[:I.MAX_EXAMPLES])


def _owned_bytes(fh, a: int, b: int, start: int) -> bytes:
    """The lines that start in [a, b) (the first data line at `start`), each whole, the last one possibly
    running past b."""
    if a != start:
        fh.seek(a - 1)
        if fh.read(1) != b"\n":  # a line began before a: it is the previous chunk's
            rest = fh.readline()
            a = fh.tell()
            if not rest.endswith(b"\n") or a >= b:
                return b""
    fh.seek(a)
    data = fh.read(b - a)
    if data and not data.endswith(b"\n"):
        data += fh.readline()  # the line crossing b, to its end
    return data


def _text_task(shared, span) -> dict:
    path, start, (src_col, dst_col, ts_col), skip_bad = shared
    with open(path, "rb") as fh:
        data = _owned_bytes(fh, span[0], span[1], start)
    buf = np.frombuffer(data, np.uint8)
    cap = int(np.count_nonzero(buf == 10)) + 1
    out = [np.empty(cap, np.int64) for _ in range(3)]
    counts = np.zeros(5, np.int64)
    ex = np.zeros((I.MAX_EXAMPLES, 3), np.int64)
    n_out, n_lines, bad_line, b0, b1, n_ex = I._parse_chunk(buf, src_col, dst_col, ts_col, skip_bad, *out,
                                                            counts, ex)
    bad = None
    if bad_line:
        bad = (int(bad_line), I._bad_reason(buf, b0, b1, src_col, dst_col, ts_col),
               data[b0:b1].decode("utf-8", "replace"))
    examples = [(int(ex[j, 0]), data[ex[j, 1]:ex[j, 2]].decode("utf-8", "replace")) for j in range(n_ex)]
    return {"src": out[0][:n_out].copy(), "dst": out[1][:n_out].copy(),
            "ts": out[2][:n_out].copy() if ts_col >= 0 else np.zeros(0, np.int64),
            "lines": int(n_lines), "bad_counts": counts, "examples": examples, "bad": bad}


# ----------------------------------------------------------------------------------------- Parquet

def _parquet(path: Path, executor) -> I.RawEdges:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        meta = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError) as exc:
        raise I.IngestError(str(path), 0, "not a readable Parquet file", str(exc)) from None
    cols = I._columns_from_header(list(schema.names))
    names = [schema.names[c] for c in cols if c >= 0]
    first = np.concatenate([[0], np.cumsum([meta.row_group(g).num_rows for g in range(meta.num_row_groups)])])
    parts = executor.map(_parquet_task, [(g, int(first[g])) for g in range(meta.num_row_groups)],
                         shared=(str(path), names))
    for part in parts:
        if isinstance(part, I.IngestError):
            raise part
    arrays = [np.concatenate([p[j] for p in parts]) if parts else np.zeros(0, np.int64) for j in range(len(names))]
    return I.RawEdges(arrays[0], arrays[1], arrays[2] if len(names) == 3 else None, str(path), int(arrays[0].size))


def _parquet_task(shared, group):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path, names = shared
    g, at = group
    try:
        parts = list(I.parquet_group_ints(pq.ParquetFile(path), g, names, Path(path), at, pa, pc))
    except I.IngestError as exc:  # returned, not raised: the driver names the first one in file order
        return exc
    return [np.concatenate([p[j] for p in parts]) if parts else np.zeros(0, np.int64) for j in range(len(names))]
