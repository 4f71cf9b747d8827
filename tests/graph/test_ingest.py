import gzip
import math
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.graph.edges import normalize_edges
from pymk.graph.ingest import IngestError, read_edges, read_text_edges


def _write(path, text, gz=False):
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def test_csv_with_src_dst_ts_header(tmp_path):
    p = _write(tmp_path / "e.csv", "ts,dst,src\n100,2,1\n50,1,2\n7,3,3\n")
    raw = read_edges(p)
    assert raw.src.tolist() == [1, 2, 3] and raw.dst.tolist() == [2, 1, 3]
    assert raw.ts.tolist() == [100, 50, 7]
    edges, rep = normalize_edges(raw)
    assert (edges.lo.tolist(), edges.hi.tolist(), edges.ts.tolist()) == ([0], [1], [50])  # earliest ts kept
    assert (rep.self_loops, rep.duplicates, rep.edges, rep.users) == (1, 1, 1, 2)
    assert "1 self-loops, 1 duplicate" in rep.summary()


def test_csv_header_without_names_uses_first_two_columns(tmp_path):
    p = _write(tmp_path / "e.csv", "id_1,id_2,weight\n10,20,0.5\n20,30,1.5\n")
    raw = read_edges(p)
    assert raw.src.tolist() == [10, 20] and raw.dst.tolist() == [20, 30] and raw.ts is None


@pytest.mark.parametrize("gz", [False, True])
def test_snap_whitespace_with_comments(tmp_path, gz):
    text = "# Directed graph\n# Nodes: 3\n\n% other comment\n1\t2\n  2   3  \n3 1\r\n"
    p = _write(tmp_path / ("e.txt.gz" if gz else "e.txt"), text, gz)
    edges, rep = normalize_edges(read_edges(p))
    assert edges.ids.tolist() == [1, 2, 3]
    assert list(zip(edges.lo.tolist(), edges.hi.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 2)]
    assert rep.rows == 3


def test_parquet(tmp_path):
    p = tmp_path / "e.parquet"
    pq.write_table(pa.table({"a": [5, 6], "src": [1, 2], "dst": [2, 3], "ts": [9, 8]}), p)
    raw = read_edges(p)
    assert raw.src.tolist() == [1, 2] and raw.dst.tolist() == [2, 3] and raw.ts.tolist() == [9, 8]


def test_parquet_null_is_named(tmp_path):
    p = tmp_path / "e.parquet"
    pq.write_table(pa.table({"src": [1, None], "dst": [2, 3]}), p)
    with pytest.raises(IngestError, match="missing value in column 'src'"):
        read_edges(p)


@pytest.mark.parametrize(
    ("line", "reason"),
    [("7", "too few fields"), ("7,x", "non-integer id"), ("1.5,2", "non-integer id"),
     ("9223372036854775808,1", "id outside int64"), ("1,-9223372036854775809", "id outside int64")],
)
def test_bad_row_names_file_line_and_content(tmp_path, line, reason):
    p = _write(tmp_path / "bad.csv", f"src,dst\n1,2\n# note\n{line}\n3,4\n")
    with pytest.raises(IngestError) as exc:
        read_edges(p)
    err = exc.value
    assert (err.path, err.line, err.reason, err.content) == (str(p), 4, reason, line)
    assert f"bad.csv:4: {reason}: '{line}'" in str(err)


def test_bad_ts_is_named(tmp_path):
    p = _write(tmp_path / "bad.csv", "src,dst,ts\n1,2,yesterday\n")
    with pytest.raises(IngestError, match="bad.csv:2: non-integer ts"):
        read_edges(p)


def test_skip_bad_rows_counts_each_kind(tmp_path):
    p = _write(tmp_path / "bad.csv", "src,dst\n1,2\nx,2\n3\n99999999999999999999,1\n2,3\n")
    raw = read_edges(p, skip_bad_rows=True)
    assert raw.src.tolist() == [1, 2]
    assert raw.bad_rows == 3 and raw.rows == 5
    assert raw.bad_by_kind == {"too few fields": 1, "non-integer id": 1, "id outside int64": 1}
    assert raw.bad_examples[0].endswith("bad.csv:3: 'x,2'")
    _, rep = normalize_edges(raw)
    assert "skipped 3 bad rows" in rep.summary()


def test_int64_extremes_are_valid(tmp_path):
    p = _write(tmp_path / "e.txt", "-9223372036854775808 9223372036854775807\n")
    raw = read_edges(p)
    assert raw.src.tolist() == [-(2**63)] and raw.dst.tolist() == [2**63 - 1]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1)), max_size=60),
       st.integers(8, 64))
def test_chunked_parse_matches_whole(tmp_path_factory, pairs, chunk):
    """Any chunk size gives the same rows and line numbers as reading the file at once."""
    p = tmp_path_factory.mktemp("h") / "e.txt"
    p.write_text("# c\n" + "".join(f"{a} {b}\n" for a, b in pairs))
    raw = read_text_edges(p, chunk_bytes=chunk)
    assert raw.src.tolist() == [a for a, _ in pairs] and raw.dst.tolist() == [b for _, b in pairs]


def test_chunked_error_line_number(tmp_path):
    lines = [f"{i},{i + 1}" for i in range(200)]
    lines[150] = "oops,1"
    p = _write(tmp_path / "e.csv", "src,dst\n" + "\n".join(lines) + "\n")
    with pytest.raises(IngestError) as exc:
        read_text_edges(p, chunk_bytes=64)
    assert exc.value.line == 152 and exc.value.content == "oops,1"


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="edge file not found"):
        read_edges(tmp_path / "nope.csv")


def test_normalize_matches_protocol(tmp_path):
    rng = np.random.default_rng(1)
    ids = rng.choice(10**12, 50, replace=False)
    src, dst = rng.choice(ids, 300), rng.choice(ids, 300)
    p = _write(tmp_path / "e.csv", "a,b\n" + "".join(f"{a},{b}\n" for a, b in zip(src, dst, strict=True)))
    edges, rep = normalize_edges(read_edges(p))
    pairs = sorted({(min(a, b), max(a, b)) for a, b in zip(src.tolist(), dst.tolist(), strict=True) if a != b})
    uniq = sorted({x for pr in pairs for x in pr})
    assert edges.ids.tolist() == uniq
    got = [(int(edges.ids[a]), int(edges.ids[b])) for a, b in zip(edges.lo, edges.hi, strict=True)]
    assert got == pairs
    assert rep.self_loops == int((src == dst).sum())
    assert rep.duplicates == 300 - rep.self_loops - len(pairs)


@pytest.mark.parametrize("ts_type, raw", [
    (pa.timestamp("s"), [1_700_000_000, 1_700_000_001]),
    (pa.timestamp("ms", tz="UTC"), [1_700_000_000_123, 1_700_000_001_999]),
    (pa.timestamp("us"), [1_700_000_000_000_001, 1_700_000_001_500_000]),
    (pa.timestamp("ns", tz="Europe/Paris"), [1_700_000_000_000_000_007, 1_700_000_001_000_000_000]),
    (pa.date32(), [19_675, 19_676]),
    (pa.int64(), [1_700_000_000, 1_700_000_001]),
])
def test_parquet_timestamps_of_any_arrow_type_are_unix_seconds(tmp_path, ts_type, raw):
    """A Parquet `ts` typed as an Arrow timestamp (any unit or zone: stored as UTC) or date is read as unix
    seconds, like an integer column; a plain int64 cast would give ms / us / ns or days."""
    path = tmp_path / "e.parquet"
    ts = pa.array(raw, pa.int64()).cast(ts_type) if ts_type != pa.date32() else pa.array(raw, pa.int32()).cast(ts_type)
    pq.write_table(pa.table({"src": [1, 2], "dst": [2, 3], "ts": ts}), path)
    want = [1_700_000_000, 1_700_000_001] if ts_type != pa.date32() else [19_675 * 86_400, 19_676 * 86_400]
    assert read_edges(path).ts.tolist() == want


# -- Parquet content of any column type, against the text formats' rules -------------------------------------

_INT_TYPES = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}
_UINT_TYPES = {"uint8": 8, "uint16": 16, "uint32": 32, "uint64": 64}
_ID_TEXT = re.compile(r'^("?)[+-]?[0-9]+\1$')
_TS_TEXT = re.compile(r'^("?)[+-]?[0-9]+(\.[0-9]*)?\1$')


def _reference(value, type_name: str, is_ts: bool):
    """What a value of a Parquet column must read as (an int), or None where it must be refused: written from
    the text formats' rules (ids whole numbers within int64, a ts's fraction dropped), not from the reader."""
    if value is None:
        return None
    if type_name.startswith(("int", "uint")):
        v = int(value)
    elif type_name.startswith("float"):
        if not math.isfinite(value) or (not is_ts and value != math.floor(value)):
            return None
        v = math.trunc(value)
    else:
        text = value
        if not (_TS_TEXT if is_ts else _ID_TEXT).match(text):
            return None
        v = int(text.strip('"').split(".")[0])  # a ts's fraction dropped (the pattern demands digits before it)
    return v if -(1 << 63) <= v < (1 << 63) else None


def _values(type_name: str):
    if type_name in _INT_TYPES:
        b = _INT_TYPES[type_name]
        return st.integers(-(1 << (b - 1)), (1 << (b - 1)) - 1)
    if type_name in _UINT_TYPES:
        return st.integers(0, (1 << _UINT_TYPES[type_name]) - 1)
    if type_name.startswith("float"):
        return st.one_of(st.integers(-(1 << 40), 1 << 40).map(float), st.floats(allow_nan=True, allow_infinity=True),
                         st.sampled_from([0.5, -2.5, 9.3e18, -9.3e18, 1e30]))
    return st.one_of(st.integers(-(1 << 64), 1 << 64).map(str), st.integers(0, 99).map(lambda i: f'"{i}"'),
                     st.sampled_from(["+7", "-0", "0x10", "1.5", "2.", ".5", " 3", "4 ", "abc", "", '"5', "1e3",
                                      "\u0661\u0662", "00012"]))


@st.composite
def _parquet_columns(draw):
    n = draw(st.integers(1, 12))
    cols = {}
    for name in ("src", "dst") + (("ts",) if draw(st.booleans()) else ()):
        type_name = draw(st.sampled_from([*_INT_TYPES, *_UINT_TYPES, "float32", "float64", "string"]))
        values = draw(st.lists(st.one_of(_values(type_name), st.just(None)) if draw(st.integers(0, 4)) == 0
                               else _values(type_name), min_size=n, max_size=n))
        cols[name] = (type_name, values)
    return cols, draw(st.integers(1, 12))


@settings(max_examples=150, deadline=None)
@given(spec=_parquet_columns())
def test_parquet_of_any_column_type_reads_as_the_text_rules_say(tmp_path_factory, spec):
    """Random column types (signed / unsigned integers of every width, floats, strings) and values (nulls, NaN,
    infinities, fractions, out of int64, quoted, signed, hex, blank...) in a valid Parquet file: every value is
    read as `_reference` says, or the file is refused with an `IngestError` naming a column and a row whose
    value the reference refuses; never another exception."""
    cols, group = spec
    arrays = {}
    for name, (type_name, values) in cols.items():
        arrays[name] = pa.array(values, pa.string() if type_name == "string" else getattr(pa, type_name)())
    path = tmp_path_factory.mktemp("pq") / "e.parquet"
    pq.write_table(pa.table(arrays), path, row_group_size=group)
    stored = {name: (cols[name][0], arr.to_pylist()) for name, arr in arrays.items()}  # float32 as stored
    want = {name: [_reference(v, t, name == "ts") for v in vals] for name, (t, vals) in stored.items()}
    if all(v is not None for vals in want.values() for v in vals):
        raw = read_edges(path)
        assert raw.src.tolist() == want["src"] and raw.dst.tolist() == want["dst"]
        assert (raw.ts.tolist() if raw.ts is not None else None) == want.get("ts")
        return
    with pytest.raises(IngestError) as err:
        read_edges(path)
    name = err.value.reason.split("column ")[-1].strip("'")
    assert name in want and want[name][err.value.line] is None, (err.value, want)
