"""Synthetic social graphs with the three properties friend recommendation depends on.

1. Power-law degrees: each user has a propensity w ~ Pareto(gamma), capped at sqrt(N * D) (the
   Chung-Lu validity bound) and scaled so the mean degree is D.
2. Community structure: users are split into communities of power-law sizes; most base edges join
   two users of one community, picked in proportion to w (Chung-Lu inside the community), the rest
   join any two users in proportion to w (hubs, weak ties).
3. Triadic closure: a share of the edges close wedges u - v - x (u in proportion to w, v a random
   friend of u, x a random friend of v), in rounds, so friends-of-friends predicts future edges as in
   real social graphs. A closing edge is timestamped after both edges of its wedge.

Everything is vectorised numpy on one seeded generator, so a seed gives the same file every time.
Memory is O(edges): ~50 bytes per edge at the peak.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

T0 = 1_600_000_000  # timestamps are seconds from here on
SPAN = 365 * 86400


@dataclass
class SynthConfig:
    users: int
    avg_degree: float = 20.0
    seed: int = 0
    gamma: float = 2.5  # degree power-law exponent
    community_share: float = 0.55  # base edges inside a community
    global_share: float = 0.15  # base edges between any two users
    closure_rounds: int = 2  # the remaining share closes wedges, in this many rounds
    community_exponent: float = 2.0  # community-size power law
    max_degree: float = 0.0  # cap on a user's expected degree (0 = sqrt(users * avg_degree), the Chung-Lu bound);
    # above the bound hubs lose some of their expected edges to deduplication, as real hubs with thousands do


def _pareto(rng, size, exponent, lo, hi):
    u = rng.random(size)
    x = lo * (1.0 - u) ** (-1.0 / (exponent - 1.0))
    return np.minimum(x, hi)


def _communities(rng, n: int, cfg: SynthConfig) -> np.ndarray:
    """Community label per user. Shape: (n,) int64."""
    s_min = max(8.0, 2 * cfg.avg_degree)
    s_max = max(2 * s_min, n / 20)
    sizes = []
    total = 0
    while total < n:
        s = _pareto(rng, 1024, cfg.community_exponent, s_min, s_max).astype(np.int64)
        sizes.append(s)
        total += int(s.sum())
    sizes = np.concatenate(sizes)
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), n)) + 1]
    labels = np.repeat(np.arange(sizes.size), sizes)[:n]
    return labels[rng.permutation(n)]


def _sample_weighted(rng, cum: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Positions drawn in proportion to weight within [lo, hi) of a cumulative-weight array."""
    base = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
    r = base + rng.random(lo.size) * (cum[hi - 1] - base)
    return np.minimum(np.searchsorted(cum, r, side="right"), hi - 1)


def _dedupe(a, b, ts, n):
    keep = a != b
    a, b, ts = a[keep], b[keep], ts[keep]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo * np.int64(n) + hi
    order = np.lexsort((ts, key))
    key, ts = key[order], ts[order]
    first = np.ones(key.size, bool)
    first[1:] = key[1:] != key[:-1]
    key, ts = key[first], ts[first]
    return key // n, key % n, ts


def _csr(lo, hi, ts, n):
    src = np.concatenate([lo, hi])
    dst = np.concatenate([hi, lo])
    t = np.concatenate([ts, ts])
    order = np.argsort(src, kind="stable")
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    return indptr, dst[order], t[order]


def generate(cfg: SynthConfig, progress=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (src, dst, ts) external ids and timestamps of a synthetic friendship graph.

    Shapes: three (m,) int64 arrays, m ~ users * avg_degree / 2 unique undirected edges.
    """
    n, d = cfg.users, cfg.avg_degree
    if n < 2 or d <= 0:
        raise ValueError(f"need users >= 2 and avg_degree > 0, got {n}, {d}")
    step = progress or (lambda msg: None)
    rng = np.random.default_rng(cfg.seed)
    m_target = int(n * d / 2)
    w = _pareto(rng, n, cfg.gamma, 1.0, np.inf)
    w = np.minimum(w / w.mean() * d, cfg.max_degree if cfg.max_degree > 0 else np.sqrt(n * d))
    comm = _communities(rng, n, cfg)
    step("communities")

    # base edges, oversampled slightly since duplicates and self-loops are dropped
    m_comm = int(m_target * cfg.community_share * 1.05)
    m_glob = int(m_target * cfg.global_share * 1.05)
    cum_all = np.cumsum(w)
    a = _sample_weighted(rng, cum_all, np.zeros(m_comm + 2 * m_glob, np.int64),
                         np.full(m_comm + 2 * m_glob, n, np.int64))
    by_comm = np.argsort(comm, kind="stable")
    cum_comm = np.cumsum(w[by_comm])
    starts = np.searchsorted(comm[by_comm], np.arange(comm.max() + 2))
    ca = comm[a[:m_comm]]
    b_comm = by_comm[_sample_weighted(rng, cum_comm, starts[ca], starts[ca + 1])]
    src = np.concatenate([a[:m_comm], a[m_comm: m_comm + m_glob]])
    dst = np.concatenate([b_comm, a[m_comm + m_glob:]])
    ts = T0 + rng.integers(0, int(SPAN * 0.7), src.size)
    lo, hi, ts = _dedupe(src, dst, ts, n)
    del a, src, dst, b_comm
    step("base edges")

    rounds = max(1, cfg.closure_rounds)
    # hubs past the Chung-Lu bound lose many closing edges to deduplication: up to 3 more rounds top the
    # count up (only then, so graphs under the default cap stay as they were)
    extra = 3 if cfg.max_degree > 0 else 0
    for r in range(rounds + extra):
        need = m_target - lo.size
        if need <= (0.005 * m_target if r >= rounds else 0):  # an extra round only for a shortfall over 0.5%
            break
        k = int(need / rounds * 1.15) if r < rounds - 1 else int(need * 1.15)
        indptr, nbr, nts = _csr(lo, hi, ts, n)
        deg = np.diff(indptr)
        ww = np.where(deg > 0, w, 0.0)
        u = _sample_weighted(rng, np.cumsum(ww), np.zeros(k, np.int64), np.full(k, n, np.int64))
        j1 = indptr[u] + (rng.random(k) * deg[u]).astype(np.int64)
        v = nbr[j1]
        j2 = indptr[v] + (rng.random(k) * deg[v]).astype(np.int64)
        x = nbr[j2]
        delay = rng.exponential(SPAN * 0.05, k).astype(np.int64)
        cts = np.maximum(nts[j1], nts[j2]) + 1 + delay
        lo, hi, ts = _dedupe(np.concatenate([lo, u]), np.concatenate([hi, x]), np.concatenate([ts, cts]), n)
        del indptr, nbr, nts, u, v, x
        step("triadic closure")
    if lo.size > m_target:  # trim the oversampling: keep the earliest edges, as a growing graph would
        keep = np.sort(np.argsort(ts, kind="stable")[:m_target])
        lo, hi, ts = lo[keep], hi[keep], ts[keep]
    ext = rng.permutation(n).astype(np.int64)  # external ids carry no community or degree order
    order = rng.permutation(lo.size)
    return ext[lo[order]], ext[hi[order]], ts[order]


def write_edges(path: str | os.PathLike, src: np.ndarray, dst: np.ndarray, ts: np.ndarray | None) -> Path:
    """Writes a CSV (header src,dst[,ts]; .gz compresses) or Parquet (.parquet) edge file."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = {"src": src, "dst": dst} | ({"ts": ts} if ts is not None else {})
    table = pa.table(cols)
    if path.suffix in (".parquet", ".pq"):
        pq.write_table(table, path)
        return path
    # pyarrow quotes header names whatever the quoting style, so the header is written here
    header = (",".join(cols) + "\n").encode()
    opts = pcsv.WriteOptions(include_header=False, quoting_style="none")
    if path.name.endswith(".gz"):
        with pa.CompressedOutputStream(str(path), "gzip") as out:
            out.write(header)
            pcsv.write_csv(table, out, opts)
    else:
        with open(path, "wb") as out:
            out.write(header)
            pcsv.write_csv(table, out, opts)
    return path
