"""Ingestion fuzzed (hypothesis): any bytes give rows or an `IngestError` naming the file and line, never
another exception; valid rows among bad ones are all kept with `skip_bad_rows`, and the first bad one is
named without it; truncated gzip and corrupt Parquet are named errors."""

import gzip
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.graph.ingest import IngestError, read_edges

INT64 = st.integers(-(2**63), 2**63 - 1)
BAD = st.sampled_from(["x,1", "1", "1.5,2", "9223372036854775808,1", "1,-9223372036854775809", "1,two",
                       "\xff\xfe,3", "1;2", "--1,2"])


@settings(max_examples=60)
@given(content=st.binary(max_size=400), name=st.sampled_from(["e.csv", "e.txt", "e.csv.gz"]),
       cut=st.floats(0.1, 1.0))
def test_any_bytes_give_rows_or_a_named_error(tmp_path_factory, content, name, cut):
    p = tmp_path_factory.mktemp("f") / name
    data = gzip.compress(content) if name.endswith(".gz") else content
    if name.endswith(".gz"):
        data = data[:max(1, int(len(data) * cut))] if cut < 1 else data  # truncations too
    p.write_bytes(data)
    for skip in (False, True):
        try:
            raw = read_edges(p, skip_bad_rows=skip)
        except IngestError as exc:
            assert str(p) in str(exc) and exc.line >= 0
        else:
            assert raw.src.shape == raw.dst.shape and raw.rows >= raw.src.size


@settings(max_examples=60)
@given(rows=st.lists(st.one_of(st.tuples(INT64, INT64), BAD), min_size=1, max_size=40),
       sep=st.sampled_from([",", " ", "\t", " , "]), header=st.booleans(), gz=st.booleans())
def test_valid_rows_are_kept_and_the_first_bad_one_is_named(tmp_path_factory, rows, sep, header, gz):
    lines = [f"{r[0]}{sep}{r[1]}" if isinstance(r, tuple) else r for r in rows]
    text = ("src,dst\n" if header else "# a comment\n") + "\n".join(lines) + "\n"
    p = tmp_path_factory.mktemp("v") / ("e.csv.gz" if gz else "e.csv")
    p.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    good = [r for r in rows if isinstance(r, tuple)]
    bad_at = [i for i, r in enumerate(rows) if not isinstance(r, tuple)]
    if not header and bad_at[:1] == [0] and not re.fullmatch(r"[+-]*\d+", re.split(r"[,\s]+", rows[0])[0]):
        bad_at = bad_at[1:]  # the protocol's rule: a first line whose first field is no integer is a header
    raw = read_edges(p, skip_bad_rows=True)
    assert list(zip(raw.src.tolist(), raw.dst.tolist(), strict=True)) == good  # nothing valid dropped
    assert raw.bad_rows == len(bad_at)
    if bad_at:
        with pytest.raises(IngestError) as exc:
            read_edges(p)
        assert exc.value.line == bad_at[0] + 2 and str(p) in str(exc.value)  # 1-based, after line 1
    else:
        read_edges(p)


def test_truncated_gzip_and_corrupt_parquet_are_named(tmp_path):
    p = tmp_path / "e.csv.gz"
    p.write_bytes(gzip.compress(b"".join(b"%d,%d\n" % (i, i + 1) for i in range(5000)))[:2000])
    with pytest.raises(IngestError, match=r"e\.csv\.gz:\d+: unreadable compressed data"):
        read_edges(p)
    q = tmp_path / "e.parquet"
    q.write_bytes(b"PAR1 not really")
    with pytest.raises(IngestError, match=r"e\.parquet:0: not a readable Parquet file"):
        read_edges(q)
