"""Reading an edge file in chunks (`pymk.graph.chunked`) gives the sequential reader's result exactly: the same
rows in the same order, the same bad-row counts and examples, the same first bad line in the same error, for
any cut of the file (hypothesis over contents and chunk sizes). On Ray: tests/pipeline/test_executor.py."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.graph import chunked
from pymk.graph.chunked import read_edges_chunked
from pymk.graph.ingest import IngestError, read_edges
from pymk.pipeline.executor import LocalExecutor

LINES = st.one_of(
    st.tuples(st.integers(-5, 10**12), st.integers(-5, 10**12), st.integers(0, 10**9)).map(
        lambda t: f"{t[0]},{t[1]},{t[2]}"),
    st.tuples(st.integers(0, 99), st.integers(0, 99)).map(lambda t: f"  {t[0]}\t{t[1]} 7 "),
    st.sampled_from(["", "# a comment", "% another", "   ", "1,2,3.75", '"4","5","6"', "7", "x,1,2", "1,2,t",
                     "9223372036854775808,1,1", "1,2,3,extra", "\t"]),
)


def _same(a, b):
    assert a.src.tolist() == b.src.tolist() and a.dst.tolist() == b.dst.tolist()
    assert (a.ts is None) == (b.ts is None) and (a.ts is None or a.ts.tolist() == b.ts.tolist())
    assert (a.rows, a.bad_rows, a.bad_by_kind, a.bad_examples) == (b.rows, b.bad_rows, b.bad_by_kind, b.bad_examples)


@settings(max_examples=120, deadline=None)
@given(header=st.sampled_from(["", "src,dst,ts\n", "# c\nfrom,to,time\n", "a,b\n"]), lines=st.lists(LINES, max_size=40),
       crlf=st.booleans(), last_newline=st.booleans(), chunk=st.integers(1, 64), skip=st.booleans(),
       head=st.sampled_from([1 << 20, 7, 40]))
def test_any_cut_of_a_text_file_reads_as_the_whole(tmp_path_factory, header, lines, crlf, last_newline, chunk, skip,
                                                    head):
    """`head`: how much the driver reads to find the header (small: the cut and the fall-back are exercised)."""
    saved, chunked.HEAD_BYTES = chunked.HEAD_BYTES, head
    try:
        _check_text(tmp_path_factory, header, lines, crlf, last_newline, chunk, skip)
    finally:
        chunked.HEAD_BYTES = saved


def _check_text(tmp_path_factory, header, lines, crlf, last_newline, chunk, skip):
    nl = "\r\n" if crlf else "\n"
    text = header.replace("\n", nl) + nl.join(lines) + (nl if last_newline and lines else "")
    path = tmp_path_factory.mktemp("chunk") / "e.csv"
    path.write_bytes(text.encode())
    try:
        want = read_edges(path, skip_bad_rows=skip)
    except IngestError as exc:
        with pytest.raises(IngestError) as got:
            read_edges_chunked(path, LocalExecutor(), skip_bad_rows=skip, chunk_bytes=chunk)
        assert (got.value.line, got.value.reason, got.value.content) == (exc.line, exc.reason, exc.content)
        return
    _same(read_edges_chunked(path, LocalExecutor(), skip_bad_rows=skip, chunk_bytes=chunk), want)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 60), group=st.integers(1, 9), bad=st.one_of(st.none(), st.integers(0, 59)),
       col=st.sampled_from(["src", "dst", "ts"]))
def test_parquet_read_by_row_groups_on_tasks_reads_as_the_whole(tmp_path_factory, n, group, bad, col):
    rng = np.random.default_rng(n * 100 + group)
    cols = {"src": rng.integers(0, 1000, n).astype(float), "dst": rng.integers(0, 1000, n).astype(float),
            "ts": rng.integers(0, 10**9, n).astype(float)}
    if bad is not None and bad < n:
        cols[col][bad] = 0.5 if col != "ts" else float("nan")
    path = tmp_path_factory.mktemp("pq") / "e.parquet"
    pq.write_table(pa.table(cols), path, row_group_size=group)
    try:
        want = read_edges(path)
    except IngestError as exc:
        with pytest.raises(IngestError) as got:
            read_edges_chunked(path, LocalExecutor())
        assert (got.value.line, got.value.reason) == (exc.line, exc.reason) == (bad, exc.reason)
        return
    _same(read_edges_chunked(path, LocalExecutor()), want)


def test_a_gzip_file_is_read_whole_and_a_missing_one_named(tmp_path):
    import gzip

    path = tmp_path / "e.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("src,dst\n1,2\n2,3\n")
    _same(read_edges_chunked(path, LocalExecutor(), chunk_bytes=3), read_edges(path))
    with pytest.raises(FileNotFoundError, match="none.csv"):
        read_edges_chunked(tmp_path / "none.csv", LocalExecutor())
