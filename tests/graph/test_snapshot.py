import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.graph.edges import normalize_edges
from pymk.graph.ingest import RawEdges
from pymk.graph.snapshot import CSRGraph, SnapshotError
from tests.helpers import graph_from_pairs, nx_graph


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 30).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=120))))
def test_csr_rows_are_sorted_neighbour_sets(case):
    n, pairs = case
    g = graph_from_pairs(pairs, n)
    ref = nx_graph(g)
    expect = {u: sorted({b for a, b in pairs if a == u and b != u} | {a for a, b in pairs if b == u and a != u})
              for u in range(n)}
    for u in range(n):
        assert g.neighbors(u).tolist() == expect[u]
    assert g.num_edges == ref.number_of_edges()


def _sample_graph():
    raw = RawEdges(np.array([10, 20, 30, 10]), np.array([20, 30, 40, 40]), np.array([5, 6, 7, 8]), "x", 4)
    edges, rep = normalize_edges(raw)
    return CSRGraph.from_edges(edges, meta={"source": "x", "ingest": rep.to_dict()})


def test_save_load_roundtrip_mmap(tmp_path):
    g = _sample_graph()
    g.save(tmp_path / "snap")
    h = CSRGraph.load(tmp_path / "snap")
    assert isinstance(h.indices, np.memmap)
    for name in ("indptr", "indices", "ids", "ts"):
        assert np.array_equal(getattr(g, name), getattr(h, name))
    meta = json.loads((tmp_path / "snap" / "meta.json").read_text())
    assert meta["num_users"] == 4 and meta["num_edges"] == 4 and meta["source"] == "x"
    assert meta["format_version"] == 1 and "created_at" in meta and meta["ingest"]["edges"] == 4
    # timestamps follow their edge in both directions
    u = int(h.index_of([10])[0])
    assert dict(zip(h.ids[h.neighbors(u)].tolist(), h.ts[h.indptr[u]:h.indptr[u + 1]].tolist(),
                    strict=True)) == {20: 5, 40: 8}


def test_index_of():
    g = _sample_graph()
    assert g.index_of([40, 10, 11, -5, 2**63 - 1]).tolist() == [3, 0, -1, -1, -1]


def test_other_format_version_is_refused(tmp_path):
    g = _sample_graph()
    g.save(tmp_path / "snap")
    meta_path = tmp_path / "snap" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(SnapshotError, match="format version 99 cannot be read"):
        CSRGraph.load(tmp_path / "snap")


def test_missing_snapshot_is_clear(tmp_path):
    with pytest.raises(SnapshotError, match="not a pymk graph snapshot"):
        CSRGraph.load(tmp_path)
    g = _sample_graph()
    g.save(tmp_path / "snap")
    (tmp_path / "snap" / "indices.npy").unlink()
    with pytest.raises(SnapshotError, match="incomplete"):
        CSRGraph.load(tmp_path / "snap")
