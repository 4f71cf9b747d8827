"""Ingestion and snapshot speed on a synthetic edge file, side by side with pyarrow / scipy / numpy.

    .venv/bin/python benchmarks/bench_ingest.py [--users 1000000] [--avg-degree 50]

Rows: `pymk synth` generation; text parse (pymk's numba parser, which names bad rows by line, vs
pyarrow.csv.read_csv, which cannot); normalisation + CSR (pymk vs scipy coo->csr with duplicate
summing); snapshot load (memory-mapped vs a full np.load) and the first full pass over it.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main():
    import pyarrow.csv as pcsv
    import scipy.sparse as sp

    from pymk.graph.edges import normalize_edges
    from pymk.graph.ingest import read_edges
    from pymk.graph.snapshot import CSRGraph
    from pymk.graph.synth import SynthConfig, generate, write_edges

    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--avg-degree", type=float, default=50)
    ap.add_argument("--cache", type=Path, default=Path("bench-data"))
    args = ap.parse_args()
    args.cache.mkdir(exist_ok=True)
    csv = args.cache / f"synth-{args.users}-{args.avg_degree:g}.csv"
    rows = []
    if not csv.exists():
        t, (s, d, ts) = timed(lambda: generate(SynthConfig(args.users, args.avg_degree, seed=0)))
        rows.append(("synth generate (pymk)", t, ""))
        t, _ = timed(lambda: write_edges(csv, s, d, ts))
        rows.append(("synth write CSV (pyarrow)", t, ""))
    size = csv.stat().st_size
    t_p, raw = timed(lambda: read_edges(csv))
    t_a, _ = timed(lambda: pcsv.read_csv(csv))
    rows.append(("parse CSV: pymk numba parser", t_p, f"{size / t_p / 1e6:.0f} MB/s, {t_a / t_p:.2f}x pyarrow"))
    rows.append(("parse CSV: pyarrow.csv.read_csv", t_a, f"{size / t_a / 1e6:.0f} MB/s"))
    t_n, (edges, _) = timed(lambda: normalize_edges(raw))
    t_c, g = timed(lambda: CSRGraph.from_edges(edges))
    n = edges.num_users

    def scipy_csr():
        lo, hi = np.unique(np.concatenate([raw.src, raw.dst]), return_inverse=True)[1].reshape(2, -1)
        a = sp.coo_matrix((np.ones(lo.size, np.int8), (lo, hi)), shape=(n, n))
        a = (a + a.T).tocsr()
        a.setdiag(0)
        a.eliminate_zeros()
        a.sort_indices()
        return a

    t_s, a = timed(scipy_csr)
    assert a.nnz == g.indices.size
    rows.append(("normalise + CSR: pymk", t_n + t_c, f"{t_s / (t_n + t_c):.2f}x scipy"))
    rows.append(("normalise + CSR: scipy coo->csr", t_s, ""))
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        t_w, _ = timed(lambda: g.save(Path(tmp) / "snap"))
        rows.append(("snapshot save", t_w, f"{g.indices.size:,} adjacency entries"))
        t_l, h = timed(lambda: CSRGraph.load(Path(tmp) / "snap"))
        rows.append(("snapshot load (memory-mapped)", t_l, ""))
        t_f, _ = timed(lambda: CSRGraph.load(Path(tmp) / "snap", mmap=False))
        rows.append(("snapshot load (np.load, full read)", t_f, f"mmap is {t_f / t_l:.0f}x faster to open"))
        t_x, _ = timed(lambda: int(np.asarray(h.indices).sum()))
        rows.append(("first full pass over mmapped indices", t_x, "(page cache warm)"))
    print(f"{csv.name}: {raw.rows:,} rows, {size / 1e6:.0f} MB; {platform.machine()}, Python "
          f"{platform.python_version()}")
    for name, t, note in rows:
        print(f"  {name:<40}{t:>9.3f} s   {note}")


if __name__ == "__main__":
    main()
