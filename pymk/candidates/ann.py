"""Approximate nearest-neighbour retrieval over user embeddings (FAISS), single or sharded.

Kinds (`candidates.ann.kind`), all by inner product:
    exact     brute force (IndexFlatIP): the reference; fine up to ~10^5 users.
    hnsw      graph index (IndexHNSWFlat): fastest queries at small k, full vectors in memory
              (~4d + 8M bytes a user), slow to build, cannot delete (tombstones, see below).
              Inner product is not a metric and an HNSW graph built on it leaves small-norm users
              unreachable, so vectors are lifted to d + 1 dimensions where L2 order = inner-product
              order (x -> [x, sqrt(R^2 - |x|^2)], q -> [q, 0], R the largest norm at build time with
              25% headroom; adding a longer vector rebuilds the graph with a larger R).
    ivf_flat  inverted lists over k-means cells, full vectors: exact scores within the probed cells.
    ivf_sq8   the same with 8-bit scalar-quantised vectors (d bytes a user, 4x smaller): the default
              above `exact_below` users; real deletes.
    ivf_pq    product-quantised codes (pq_m bytes a user): smallest, lowest recall at a given nprobe.
IVF query cost grows with nprobe, HNSW's with efSearch; `build` calibrates either on a sample of
users until recall against exact search reaches `target_recall` both at `calibrate_k` (100) and at
the depth Stage 1 reads (its k), recorded in ann.json.

Labels are dense user indices. Updates: `add`, `replace`, `remove` one or many users without a
rebuild; `relabel` renames them all in place (`pymk update`: the next version's dense indices).
IVF removes for real; HNSW and exact indexes mark the slot dead (a tombstone, skipped by the
search through an id selector) and `compact()` rebuilds from the live vectors once dead slots pass
`rebuild_dead_share` of the index. One writer at a time; searches may run in parallel.

Sharded: `ShardedAnnIndex` has the same interface. Each shard holds the users homed on one graph
shard; IVF shards share one trained quantizer, so at the same nprobe they scan exactly the cells a
single index would and the merged answer equals the single index's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pymk import __version__
from pymk.artifacts import read_artifact_meta
from pymk.config import AnnConfig
from pymk.graph.rows import gather

ANN_FORMAT = "pymk-ann"
ANN_FORMAT_VERSION = 1
KINDS = ("exact", "hnsw", "ivf_flat", "ivf_sq8", "ivf_pq")
LIFT_HEADROOM = 1.25  # hnsw: lift radius over the largest norm seen, so that most later vectors fit


class AnnError(ValueError):
    """An index that does not fit the embeddings or users it is used with, or a bad request to it."""


def _faiss():
    import faiss

    return faiss


def embedding_digest(emb: np.ndarray) -> str:
    """A cheap fingerprint of an embedding table: its shape and ~1,000 evenly spaced rows."""
    emb = np.asarray(emb)
    rows = np.unique(np.linspace(0, max(emb.shape[0] - 1, 0), num=min(1024, emb.shape[0]), dtype=np.int64))
    h = hashlib.sha1(repr(emb.shape).encode())
    h.update(np.ascontiguousarray(emb[rows], np.float32).tobytes())
    return h.hexdigest()[:16]


def resolve_kind(config: AnnConfig, n: int) -> str:
    if config.kind == "auto":
        return "exact" if n < config.exact_below else "ivf_sq8"
    return config.kind


def default_nlist(n: int) -> int:
    """About 4 sqrt(n) cells, at least 1 and at most n / 39 (FAISS wants ~39 training points a cell)."""
    return int(max(1, min(4 * np.sqrt(max(n, 1)), n // 39)))


def _new_faiss_index(kind: str, dim: int, n: int, config: AnnConfig):
    faiss = _faiss()
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "exact":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        idx = faiss.IndexHNSWFlat(dim + 1, config.hnsw_m, faiss.METRIC_L2)  # lifted vectors, see module doc
        idx.hnsw.efConstruction = config.hnsw_ef_construction
        return idx
    nlist = config.nlist or default_nlist(n)
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf_flat":
        idx = faiss.IndexIVFFlat(quantizer, dim, nlist, ip)
    elif kind == "ivf_sq8":
        idx = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, ip)
    elif kind == "ivf_pq":
        m = config.pq_m or max(1, dim // 4)
        if dim % m:
            raise AnnError(f"candidates.ann.pq_m = {m} must divide the embedding dimension {dim}")
        nbits = int(min(8, max(4, np.log2(max(n, 1) / 39))))  # FAISS wants ~39 training points a code
        idx = faiss.IndexIVFPQ(quantizer, dim, nlist, m, nbits, ip)
    else:
        raise AnnError(f"unknown ANN kind {kind!r} (known: {', '.join(KINDS)})")
    idx.own_fields = True
    quantizer.this.disown()  # the IVF index owns (and frees) its quantizer
    return idx


def _train(index, emb: np.ndarray, seed: int) -> None:
    if index.is_trained:
        return
    nlist = index.nlist
    n_train = min(emb.shape[0], max(64 * nlist, 10_000))
    rows = np.sort(np.random.default_rng(seed).choice(emb.shape[0], n_train, replace=False))
    index.train(np.ascontiguousarray(emb[rows], np.float32))


class AnnIndex:
    """One FAISS index over (a subset of) users; answers `search(queries, k)` with user labels.

    Internal slots count insertions; `labels[slot]` is the user, `alive[slot]` whether the slot is
    current (False after remove/replace), `slot_of[user]` the user's live slot or -1. FAISS ids are
    the slots for exact / hnsw (sequential ids) and the users themselves for IVF (which deletes by id,
    so a user has one entry; shards of one `faiss.IndexShardsIVF` then answer with users directly).
    """

    def __init__(self, kind: str, dim: int, index, config: AnnConfig, labels=None, alive=None,
                 max_norm: float = 0.0):
        self.kind = kind
        self.dim = dim
        self.index = index
        self.config = config
        self.max_norm = float(max_norm)  # hnsw: R of the lift; vectors added later above it are clipped to it
        self.labels = np.zeros(0, np.int64) if labels is None else np.asarray(labels, np.int64)
        self.alive = np.ones(self.labels.size, bool) if alive is None else np.asarray(alive, bool)
        top = int(self.labels.max(initial=-1)) + 1
        self.slot_of = np.full(top, -1, np.int64)
        live = np.flatnonzero(self.alive)
        self.slot_of[self.labels[live]] = live
        self._selector = None
        self.set_search_param(None)

    # -- construction ---------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, emb: np.ndarray, labels: np.ndarray | None = None, config: AnnConfig | None = None, *,
              kind: str | None = None, template=None, max_norm: float | None = None) -> AnnIndex:
        """Index `emb` (rows labelled `labels`, default 0..n-1).

        Args:
            emb: (n, d) float32. labels: (n,) int64 distinct users.
            template: an already trained empty FAISS index to copy (shards sharing one quantizer).
            max_norm: hnsw's lift radius (shards share the whole table's); default the largest norm in emb.
        """
        config = config or AnnConfig()
        emb = np.ascontiguousarray(emb, np.float32)
        if emb.ndim != 2:
            raise AnnError(f"embeddings must be (n, d), got shape {emb.shape}")
        labels = np.arange(emb.shape[0], dtype=np.int64) if labels is None else np.asarray(labels, np.int64)
        kind = kind or resolve_kind(config, emb.shape[0])
        if template is not None:
            index = _faiss().clone_index(template)
        else:
            index = _new_faiss_index(kind, emb.shape[1], emb.shape[0], config)
            if kind.startswith("ivf"):
                _train(index, emb, config.seed)
        if max_norm is None:
            max_norm = LIFT_HEADROOM * float(np.linalg.norm(emb, axis=1).max(initial=0.0))
        out = cls(kind, emb.shape[1], index, config, max_norm=max_norm)
        out.add(labels, emb)
        return out

    def _lift(self, vectors: np.ndarray) -> np.ndarray:
        """hnsw: [x, sqrt(R^2 - |x|^2)], so that L2 distance to [q, 0] orders like -q.x."""
        if self.kind != "hnsw":
            return vectors
        sq = np.einsum("ij,ij->i", vectors, vectors)
        extra = np.sqrt(np.maximum(self.max_norm ** 2 - sq, 0.0)).astype(np.float32)
        return np.ascontiguousarray(np.hstack([vectors, extra[:, None]]), np.float32)

    # -- queries --------------------------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        """Live users in the index."""
        return int(self.alive.sum())

    @property
    def dead(self) -> int:
        return int(self.labels.size - self.alive.sum())

    def contains(self, users) -> np.ndarray:
        users = np.asarray(users, np.int64)
        ok = (users >= 0) & (users < self.slot_of.size)
        out = np.zeros(users.shape, bool)
        out[ok] = self.slot_of[users[ok]] >= 0
        return out

    def set_search_param(self, value: int | None) -> None:
        """nprobe (IVF) or efSearch (HNSW); None: the configured / calibrated value."""
        if self.kind.startswith("ivf"):
            nlist = self.index.nlist
            self.search_param = int(min(nlist, value or self.config.nprobe or max(1, nlist // 16)))
            self.index.nprobe = self.search_param
        elif self.kind == "hnsw":
            self.search_param = int(value or self.config.hnsw_ef_search)
        else:
            self.search_param = 0

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k live users by inner product, best first.

        Args:
            queries: (B, d) float32. k: capped at the live users.
        Returns:
            scores (B, k') float32 and labels (B, k') int64, k' = min(k, ntotal); -1 / -inf pad.
        """
        faiss = _faiss()
        queries = np.ascontiguousarray(queries, np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise AnnError(f"queries must be (B, {self.dim}), got shape {queries.shape}")
        k = int(min(max(k, 0), self.ntotal))
        if k == 0 or queries.shape[0] == 0:
            return np.zeros((queries.shape[0], k), np.float32), np.zeros((queries.shape[0], k), np.int64)
        kw = {}
        sel = self._dead_selector()
        if self.kind == "hnsw":
            kw = {"sel": sel} if sel is not None else {}
            # efSearch is set for k = calibrate_k; deeper searches keep the same ef / k ratio
            ef = int(np.ceil(self.search_param * max(1.0, k / self.config.calibrate_k)))
            params = faiss.SearchParametersHNSW(efSearch=max(ef, k), **kw)
        elif self.kind.startswith("ivf"):
            params = faiss.SearchParametersIVF(nprobe=self.search_param)
        else:
            params = faiss.SearchParameters(sel=sel) if sel is not None else None
        if self.kind == "hnsw":
            dist, slots = self.index.search(np.hstack([queries, np.zeros((queries.shape[0], 1), np.float32)]), k,
                                            params=params)
            # |[q,0] - [x,e]|^2 = |q|^2 + R^2 - 2 q.x  ->  q.x
            scores = 0.5 * (np.einsum("ij,ij->i", queries, queries)[:, None] + self.max_norm ** 2 - dist)
        else:
            scores, slots = self.index.search(queries, k, params=params)
        if self.kind.startswith("ivf"):
            labels = slots  # IVF ids are users
        else:
            labels = np.where(slots >= 0, self.labels[np.maximum(slots, 0)], -1)
        scores = np.where(slots >= 0, scores, -np.inf).astype(np.float32)
        return scores, labels

    def _dead_selector(self):
        if self.dead == 0 or self.kind.startswith("ivf"):  # IVF deletes for real
            return None
        if self._selector is None:
            faiss = _faiss()
            self._bitmap = np.packbits(self.alive, bitorder="little")  # kept alive: FAISS holds a raw pointer
            self._selector = faiss.IDSelectorBitmap(self.alive.size, faiss.swig_ptr(self._bitmap))
        return self._selector

    # -- updates --------------------------------------------------------------------------------------------------
    def add(self, users, vectors) -> None:
        """Adds users not in the index yet. Shapes: users (m,), vectors (m, d)."""
        users = np.asarray(users, np.int64).ravel()
        vectors = np.ascontiguousarray(vectors, np.float32).reshape(users.size, -1) if users.size else \
            np.zeros((0, self.dim), np.float32)
        if vectors.shape[1] != self.dim:
            raise AnnError(f"vectors have dimension {vectors.shape[1]}, the index {self.dim}")
        if users.size == 0:
            return
        if (users < 0).any():
            raise AnnError(f"user labels must be >= 0, got {int(users.min())}")
        if np.unique(users).size != users.size:
            raise AnnError("the same user is added twice in one call")
        present = self.contains(users)
        if present.any():
            raise AnnError(f"user {int(users[present][0])} is already in the index; use replace")
        if self.kind == "hnsw":
            longest = float(np.linalg.norm(vectors, axis=1).max())
            if longest > self.max_norm:  # cannot be lifted to radius R: rebuild with a larger one
                self.max_norm = LIFT_HEADROOM * longest
                self.compact(force=True)
        start = self.labels.size
        slots = np.arange(start, start + users.size, dtype=np.int64)
        if self.kind.startswith("ivf"):
            self.index.add_with_ids(vectors, users)
        else:
            self.index.add(self._lift(vectors))
        self.labels = np.concatenate([self.labels, users])
        self.alive = np.concatenate([self.alive, np.ones(users.size, bool)])
        top = int(users.max()) + 1
        if top > self.slot_of.size:
            self.slot_of = np.concatenate([self.slot_of, np.full(top - self.slot_of.size, -1, np.int64)])
        self.slot_of[users] = slots
        self._selector = None

    def remove(self, users) -> int:
        """Removes users (absent ones are ignored); returns how many were removed."""
        users = np.asarray(users, np.int64).ravel()
        users = users[self.contains(users)]
        if users.size == 0:
            return 0
        slots = self.slot_of[users]
        if self.kind.startswith("ivf"):
            self.index.remove_ids(users)
        self.alive[slots] = False
        self.slot_of[users] = -1
        self._selector = None
        if self.dead > self.config.rebuild_dead_share * max(self.labels.size, 1) and not self.kind.startswith("ivf"):
            self.compact()
        return int(users.size)

    def replace(self, users, vectors) -> None:
        """New vectors for users (added if absent). Shapes: users (m,), vectors (m, d)."""
        self.remove(users)
        self.add(users, vectors)

    def relabel(self, remap: np.ndarray) -> None:
        """Renames each user u in the index to remap[u], in place (the next model version's dense indices);
        users mapped to -1 must have been removed first. Shapes: remap (n_old,) int64."""
        remap = np.asarray(remap, np.int64)
        live = np.flatnonzero(self.alive)
        users = self.labels[live]
        if users.size and (users.max() >= remap.size or (remap[users] < 0).any()):
            bad = users[(users >= remap.size) | (remap[np.minimum(users, remap.size - 1)] < 0)]
            raise AnnError(f"user {int(bad[0])} of the index has no new label: remove it first")
        if self.kind.startswith("ivf"):  # FAISS holds the users as ids: rewritten list by list
            faiss = _faiss()
            inv = self.index.invlists
            for cell in range(self.index.nlist):
                size = inv.list_size(cell)
                if size:
                    ptr = inv.get_ids(cell)
                    ids = faiss.rev_swig_ptr(ptr, size)
                    ids[:] = remap[ids]
                    inv.release_ids(cell, ptr)
        labels = np.full(self.labels.size, -1, np.int64)  # dead slots keep no user
        labels[live] = remap[users]
        self.labels = labels
        self.slot_of = np.full(int(remap.max(initial=-1)) + 1, -1, np.int64)
        self.slot_of[labels[live]] = live
        self._selector = None

    def compact(self, force: bool = False) -> None:
        """Rebuilds from the live vectors (drops tombstones). Exact and HNSW store full vectors."""
        if self.dead == 0 and not force:
            return
        live = np.flatnonzero(self.alive)
        vecs = self.index.reconstruct_batch(live)[:, : self.dim] if live.size else np.zeros((0, self.dim), np.float32)
        users = self.labels[live]
        self.index = _new_faiss_index(self.kind, self.dim, live.size, self.config)
        self.labels = np.zeros(0, np.int64)
        self.alive = np.zeros(0, bool)
        self.slot_of = np.full(self.slot_of.size, -1, np.int64)
        self.add(users, vecs)

    # -- storage --------------------------------------------------------------------------------------------------
    def save(self, path: Path, name: str) -> None:
        faiss = _faiss()
        faiss.write_index(self.index, str(path / f"{name}.faiss"))
        np.save(path / f"{name}.labels.npy", self.labels)
        np.save(path / f"{name}.alive.npy", self.alive)
        (path / f"{name}.json").write_text(json.dumps({"max_norm": self.max_norm}))

    @classmethod
    def load(cls, path: Path, name: str, kind: str, dim: int, config: AnnConfig, search_param: int) -> AnnIndex:
        index = _faiss().read_index(str(path / f"{name}.faiss"))
        if index.d != dim + (kind == "hnsw"):
            raise AnnError(f"{path / name}.faiss: dimension {index.d}, ann.json says {dim}")
        extra = json.loads((path / f"{name}.json").read_text())
        out = cls(kind, dim, index, config, np.load(path / f"{name}.labels.npy"), np.load(path / f"{name}.alive.npy"),
                  max_norm=extra["max_norm"])
        if out.labels.size != index.ntotal and not kind.startswith("ivf"):
            raise AnnError(f"{path / name}: {index.ntotal} vectors for {out.labels.size} labels")
        out.set_search_param(search_param)
        return out


class ShardedAnnIndex:
    """S `AnnIndex` shards searched in parallel and merged; the interface of one `AnnIndex`.

    IVF shards share one coarse quantizer: a query picks its cells once and every shard scans them
    (`faiss.IndexShardsIVF`, threads and merge in C++), so S shards do the work of one index and return
    its answers. Other kinds search every shard whole in a thread pool and merge here.

    Args:
        shards: one index per shard. shard_of: (n,) int home shard per user (new users: label mod S).
        workers: threads searching shards at once (default: min(S, cores)); FAISS releases the GIL.
    """

    def __init__(self, shards: list[AnnIndex], shard_of: np.ndarray, workers: int | None = None):
        self.shards = shards
        self.shard_of = np.asarray(shard_of, np.int32)
        self.kind = shards[0].kind
        self.dim = shards[0].dim
        self.config = shards[0].config
        if self.kind.startswith("ivf"):  # cells are chosen once for all shards: their quantizers must agree
            first = shards[0].index.quantizer.reconstruct_n(0, shards[0].index.nlist)
            for i, sh in enumerate(shards[1:], 1):
                if sh.index.nlist != shards[0].index.nlist or not np.array_equal(
                        sh.index.quantizer.reconstruct_n(0, sh.index.nlist), first):
                    raise AnnError(f"IVF shard {i} was trained apart from shard 0; build shards with "
                                   f"ShardedAnnIndex.build (one shared quantizer)")
            faiss = _faiss()
            self._ivf = faiss.IndexShardsIVF(shards[0].index.quantizer, shards[0].index.nlist, True, False)
            for sh in shards:
                self._ivf.add_shard(sh.index)  # self.shards keeps the Python objects (and so the indexes) alive
        self.workers = workers or max(1, min(len(shards), os.cpu_count() or 1))
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="pymk-ann")

    @classmethod
    def build(cls, emb: np.ndarray, shard_of: np.ndarray, config: AnnConfig | None = None, *,
              kind: str | None = None, executor=None) -> ShardedAnnIndex:
        """Index `emb` with user i on shard `shard_of[i]`. Shapes: emb (n, d), shard_of (n,).
        executor: build each shard as a task (`pymk.pipeline.executor`, e.g. Ray tasks; the IVF cells are
        trained once here and shipped); default: here, one after another. The same index either way."""
        config = config or AnnConfig()
        emb = np.ascontiguousarray(emb, np.float32)
        shard_of = np.asarray(shard_of, np.int32)
        if shard_of.shape != (emb.shape[0],):
            raise AnnError(f"shard_of has shape {shard_of.shape}, expected ({emb.shape[0]},)")
        kind = kind or resolve_kind(config, emb.shape[0])
        template = None
        max_norm = LIFT_HEADROOM * float(np.linalg.norm(emb, axis=1).max(initial=0.0))
        if kind.startswith("ivf"):
            template = _new_faiss_index(kind, emb.shape[1], emb.shape[0], config)
            _train(template, emb, config.seed)
        homes = [np.flatnonzero(shard_of == s) for s in range(int(shard_of.max(initial=0)) + 1)]
        from pymk.pipeline.executor import remote

        if remote(executor):
            from dataclasses import asdict

            faiss = _faiss()
            shared = {"emb": emb, "config": asdict(config), "kind": kind, "max_norm": max_norm,
                      "template": None if template is None else faiss.serialize_index(template)}
            built = executor.map(_build_shard_task, homes, shared=shared)
            shards = [AnnIndex(kind, emb.shape[1], faiss.deserialize_index(raw), config, labels, alive,
                               max_norm=max_norm) for raw, labels, alive in built]
            for sh in shards:
                sh.set_search_param(None)
            return cls(shards, shard_of)
        shards = [AnnIndex.build(emb[users], users, config, kind=kind, template=template, max_norm=max_norm)
                  for users in homes]
        return cls(shards, shard_of)

    @property
    def ntotal(self) -> int:
        return sum(s.ntotal for s in self.shards)

    @property
    def dead(self) -> int:
        return sum(s.dead for s in self.shards)

    @property
    def search_param(self) -> int:
        return self.shards[0].search_param

    def set_search_param(self, value: int | None) -> None:
        for s in self.shards:
            s.set_search_param(value)

    def contains(self, users) -> np.ndarray:
        users = np.asarray(users, np.int64)
        return np.any([s.contains(users) for s in self.shards], axis=0)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Same contract as `AnnIndex.search`: every shard's top k, merged."""
        queries = np.ascontiguousarray(queries, np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise AnnError(f"queries must be (B, {self.dim}), got shape {queries.shape}")
        k = int(min(max(k, 0), self.ntotal))
        if self.kind.startswith("ivf"):
            if k == 0 or queries.shape[0] == 0:
                return np.zeros((queries.shape[0], k), np.float32), np.zeros((queries.shape[0], k), np.int64)
            scores, labels = self._ivf.search(queries, k, params=_faiss().SearchParametersIVF(nprobe=self.search_param))
            return np.where(labels >= 0, scores, -np.inf).astype(np.float32), labels
        return merge_nearest(list(self._pool.map(lambda s: s.search(queries, k), self.shards)), k)

    def _home(self, users: np.ndarray) -> np.ndarray:
        s = len(self.shards)
        return np.where(users < self.shard_of.size, self.shard_of[np.minimum(users, self.shard_of.size - 1)],
                        users % s).astype(np.int64)

    def add(self, users, vectors) -> None:
        users = np.asarray(users, np.int64).ravel()
        if users.size == 0:
            return
        vectors = np.ascontiguousarray(vectors, np.float32).reshape(users.size, -1)
        if self.contains(users).any():
            raise AnnError(f"user {int(users[self.contains(users)][0])} is already in the index; use replace")
        home = self._home(users)
        for s in np.unique(home).tolist():
            self.shards[s].add(users[home == s], vectors[home == s])

    def remove(self, users) -> int:
        users = np.asarray(users, np.int64).ravel()
        return sum(s.remove(users) for s in self.shards)

    def replace(self, users, vectors) -> None:
        self.remove(users)
        self.add(users, vectors)

    def compact(self) -> None:
        for s in self.shards:
            s.compact()

    def relabel(self, remap: np.ndarray, shard_of: np.ndarray) -> None:
        """`AnnIndex.relabel` on every shard; `shard_of`: the new users' home shards, (n_new,) (a kept user
        stays on the shard it is on, wherever a new partition homes it)."""
        for s in self.shards:
            s.relabel(remap)
        kept = np.flatnonzero(np.asarray(remap) >= 0)
        shard_of = np.asarray(shard_of, np.int32).copy()
        shard_of[remap[kept]] = self.shard_of[kept]
        self.shard_of = shard_of


def merge_nearest(parts: list, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Shards' answers (scores (B, k_s), labels (B, k_s); None for a shard that did not answer) as one top k per
    row, best first; equal scores keep the shards' order. Returns (None, None) when no shard answered."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None, None
    scores = np.concatenate([p[0] for p in parts], axis=1)
    labels = np.concatenate([p[1] for p in parts], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(labels, order, 1)


def _build_shard_task(shared: dict, users: np.ndarray):
    """One shard of `ShardedAnnIndex.build` as an executor task: its FAISS index serialised, labels, alive."""
    faiss = _faiss()
    template = None if shared["template"] is None else faiss.deserialize_index(shared["template"])
    index = AnnIndex.build(shared["emb"][users], users, AnnConfig(**shared["config"]), kind=shared["kind"],
                           template=template, max_norm=shared["max_norm"])
    return faiss.serialize_index(index.index), index.labels, index.alive


# -- retrieval for users: exclusions -----------------------------------------------------------------------------
def search_users(index, emb: np.ndarray, users: np.ndarray, k: int, graph=None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k users for each query user by its own embedding; self and friends excluded.

    Friends are excluded by asking the index for k + (most friends in the batch) + 1 and dropping them.
    Args:
        index: an `AnnIndex` / `ShardedAnnIndex`. emb: (n, d) embeddings the queries are read from.
        users: (B,) dense indices, each with a row in `emb`. graph: whose friendships are excluded.
    Returns:
        scores (B, k) float32 (-inf pad) and idx (B, k) int64 (-1 pad), best first.
    """
    users = np.asarray(users, np.int64)
    k = int(min(k, index.ntotal))
    out_s = np.full((users.size, k), -np.inf, np.float32)
    out_i = np.full((users.size, k), -1, np.int64)
    if users.size == 0 or k == 0:
        return out_s, out_i
    if graph is not None:
        ptr, friends = gather(graph, users)
        friends = friends.astype(np.int64)
    else:
        ptr, friends = np.zeros(users.size + 1, np.int64), np.zeros(0, np.int64)
    deg = np.diff(ptr)
    scores, labels = index.search(np.asarray(emb[users], np.float32), k + int(deg.max(initial=0)) + 1)
    # drop self and friends: a row's excluded labels, tested with one sorted search over (row, label) keys
    n_lab = np.int64(max(int(labels.max(initial=0)), int(users.max(initial=0)), int(friends.max(initial=0))) + 1)
    rows = np.arange(users.size, dtype=np.int64)
    ex = np.sort(np.concatenate([rows * n_lab + users, np.repeat(rows, deg) * n_lab + friends]))
    keys = rows[:, None] * n_lab + labels
    pos = np.minimum(np.searchsorted(ex, keys), ex.size - 1)
    drop = (ex[pos] == keys) | (labels < 0)
    keep = ~drop
    rank = np.cumsum(keep, axis=1) - 1
    sel = keep & (rank < k)
    r, c = np.nonzero(sel)
    out_s[r, rank[r, c]] = scores[r, c]
    out_i[r, rank[r, c]] = labels[r, c]
    return out_s, out_i


def recall_against_exact(index, emb: np.ndarray, queries: np.ndarray, k: int, exact=None) -> float:
    """Share of each query user's exact top-k (inner product over `emb`, self excluded) that `index`
    also returns (self excluded). Shapes: queries (B,) dense indices; exact (B, k) precomputed or None."""
    from pymk.candidates.embedding import exact_search

    queries = np.asarray(queries, np.int64)
    if exact is None:
        _, exact = exact_search(emb, queries, k)
    got = index.search(np.asarray(emb[queries], np.float32), k + 1)[1]
    hits = 0
    for q, a, b in zip(queries.tolist(), exact, got, strict=True):
        b = b[(b >= 0) & (b != q)][:k]
        hits += np.intersect1d(a[a >= 0], b).size
    return hits / max(int((exact >= 0).sum()), 1)


def calibrate(index, emb: np.ndarray, config: AnnConfig, depth: int = 0, *, start: int | None = None) -> dict:
    """Raises nprobe / efSearch (doubling) until recall on sampled users meets the target at k =
    `config.calibrate_k` and at k = `depth` (how deep Stage 1 reads; 0: only calibrate_k).

    start: the setting a previous version was calibrated to (`pymk update`): where it still meets the
    target, only lower settings are tried (halving, while they meet it), so an index whose vectors
    moved little is checked in ~2 searches instead of the ~12 doublings from 1 cell.
    """
    from pymk.candidates.embedding import exact_search

    if index.kind == "exact":
        return {"param": 0, "recall": 1.0, "recall_at": {}}
    n = emb.shape[0]
    rng = np.random.default_rng(config.seed)
    queries = np.sort(rng.choice(n, min(config.calibrate_queries, n), replace=False))
    ks = sorted({min(k, n - 1) for k in (config.calibrate_k, depth) if k > 0})
    _, exact = exact_search(emb, queries, ks[-1])
    first = index.shards[0] if isinstance(index, ShardedAnnIndex) else index
    limit = first.index.nlist if index.kind.startswith("ivf") else 4096
    # the smallest setting that meets the target, by doubling from the configured start (or 1 cell)
    floor = (config.nprobe or 1) if index.kind.startswith("ivf") else config.hnsw_ef_search

    def measure(p: int) -> tuple[dict, float]:
        index.set_search_param(p)
        at = {f"@{k}": round(recall_against_exact(index, emb, queries, k, exact[:, :k]), 4) for k in ks}
        return at, min(at.values())

    def result(p: int, at: dict, rec: float) -> dict:
        index.set_search_param(p)
        return {"param": int(index.search_param), "recall": rec, "recall_at": at, "queries": int(queries.size)}

    param = floor if start is None else int(min(limit, max(floor, start)))
    at, rec = measure(param)
    if start is not None and rec >= config.target_recall:
        while param > floor:
            lower = max(floor, param // 2)
            at_l, rec_l = measure(lower)
            if rec_l < config.target_recall:
                break
            param, at, rec = lower, at_l, rec_l
        return result(param, at, rec)
    while rec < config.target_recall and param < limit:
        param = min(limit, param * 2)
        at, rec = measure(param)
    return result(param, at, rec)


# -- artifact ----------------------------------------------------------------------------------------------------
def build_ann(emb: np.ndarray, config: AnnConfig, out_dir: Path, *, shard_of: np.ndarray | None = None,
              depth: int = 0, log=print, executor=None) -> dict:
    """Builds, calibrates and saves the index of `emb` under out_dir; returns the stage summary.
    executor: where a sharded index's shards are built (`ShardedAnnIndex.build`)."""
    t0 = time.perf_counter()
    kind = resolve_kind(config, emb.shape[0])
    shards = 1 if shard_of is None else int(np.max(shard_of, initial=0)) + 1
    if shards > 1:
        index = ShardedAnnIndex.build(emb, shard_of, config, kind=kind, executor=executor)
    else:
        index = AnnIndex.build(emb, None, config, kind=kind)
    built = time.perf_counter() - t0
    cal = calibrate(index, emb, config, depth)
    if cal["recall"] < config.target_recall:
        log(f"warning: ANN index {kind} reaches recall {cal['recall_at']} at most, below the target "
            f"{config.target_recall}; use another kind (candidates.ann.kind)")
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    save_ann(index, tmp, emb, calibration=cal)
    shutil.rmtree(out_dir, ignore_errors=True)  # a rebuilt index replaces the old one whole
    os.replace(tmp, out_dir)
    return {"kind": kind, "shards": shards, "users": int(index.ntotal), "search_param": cal["param"],
            "calibrated_recall": cal["recall"], "recall_at": cal["recall_at"], "build_seconds": round(built, 2),
            "seconds": round(time.perf_counter() - t0, 2)}


def save_ann(index, out_dir: Path, emb: np.ndarray, *, calibration: dict | None = None) -> None:
    from dataclasses import asdict

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = index.shards if isinstance(index, ShardedAnnIndex) else [index]
    for s, shard in enumerate(shards):
        shard.save(out_dir, f"shard-{s:03d}")
    if isinstance(index, ShardedAnnIndex):
        np.save(out_dir / "shard_of.npy", index.shard_of)
    meta = {"format": ANN_FORMAT, "format_version": ANN_FORMAT_VERSION, "pymk_version": __version__,
            "kind": index.kind, "dim": int(index.dim), "num_users": int(emb.shape[0]), "shards": len(shards),
            "embedding_digest": embedding_digest(emb), "search_param": int(index.search_param),
            "calibration": calibration, "config": asdict(index.config),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = out_dir / "ann.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, out_dir / "ann.json")


def load_ann(path: Path, emb: np.ndarray):
    """Opens the index under `path`; refuses one built from other embeddings (shape or content)."""
    path = Path(path)
    meta, config = checked_ann_meta(path, emb)
    shards = [AnnIndex.load(path, f"shard-{s:03d}", meta["kind"], meta["dim"], config, meta["search_param"])
              for s in range(meta["shards"])]
    if meta["shards"] == 1:
        return shards[0]
    return ShardedAnnIndex(shards, np.load(path / "shard_of.npy"))


def checked_ann_meta(path: Path, emb: np.ndarray) -> tuple[dict, AnnConfig]:
    """The index's `ann.json` under `path` and its config; refuses an index built from other embeddings
    (shape or content) than `emb` (which may be memory-mapped: ~1,000 rows are read)."""
    path = Path(path)
    meta_path, meta = read_artifact_meta(path, "ann.json", ANN_FORMAT, ANN_FORMAT_VERSION, AnnError,
                                         what="ANN index", fix="rebuild it with `pymk build`")
    if meta["dim"] != emb.shape[1]:
        raise AnnError(f"{meta_path}: index of {meta['dim']}-d vectors, the model's embeddings are "
                       f"{emb.shape[1]}-d; rebuild the index")
    if meta["num_users"] != emb.shape[0]:
        raise AnnError(f"{meta_path}: index built for {meta['num_users']} users, the embeddings have "
                       f"{emb.shape[0]} rows; rebuild the index")
    if meta["embedding_digest"] != embedding_digest(emb):
        raise AnnError(f"{meta_path}: index built from other embeddings (digest {meta['embedding_digest']} vs "
                       f"{embedding_digest(emb)}); rebuild the index")
    return meta, AnnConfig(**meta["config"])
