"""A shard server's share of the per-user data: its users' embeddings, its ANN shard, its users' features.

A user's data lives on its home shard (`plan.home`), as its adjacency list does: the GNN embedding (the query
vector of the embedding source), the learned ranker's user-feature row, and the user's entry in the ANN
index, which the build already shards by home (`pymk.candidates.ann.ShardedAnnIndex`, `shard-<s>` files).
`pymk build --shards S` (and `pymk update`) write each shard's rows of those tables to their own files
(`gnn/shards/<s>.npy`, `features/shards/<s>.npy`, `write_shard_rows`): a server reads only its own file and
keeps only those rows (the whole embedding table is opened memory-mapped only to check that the ANN index
was built from it: ~1,000 rows read); the ranking tier holds none of it. The feature rows end with the user's
embedding: a server keeps that part once, served from the embedding rows (`share_embedding_columns`). A model
without the files (built before them) is read from the whole tables instead.

Embedding search on a shard answers over the users homed there: the ANN shard's top k, or an exact top k by
inner product when the model has no index. The tier merges the shards' answers (`pymk.serving.tier`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pymk.candidates.ann import embedding_digest


def find_sorted(keys: np.ndarray, users) -> tuple[np.ndarray, np.ndarray]:
    """Positions of `users` in the sorted `keys` and whether each is there. Shapes: (q,) -> (q,), (q,) bool."""
    users = np.asarray(users, np.int64).ravel()
    pos = np.minimum(np.searchsorted(keys, users), max(keys.size - 1, 0))
    return pos, (keys[pos] == users) if keys.size else np.zeros(users.size, bool)


class ShardUsersError(RuntimeError):
    """A model's per-user tables that do not fit together (shape, shard count, another build's index)."""


class ShardUsers:
    """The rows of the users homed on one shard.

    Args:
        homed: (h,) sorted global dense indices homed here at the build.
        emb: (h, d) float32 embeddings of `homed` (rows of users past the embedding table are unused), or None.
        has_emb: (h,) bool: the user has an embedding (and, with an index, is in it).
        ann: this shard's `AnnIndex` (labels are global indices), or None (exact search over `emb`).
        feat: (h, F) float32 user-feature rows of `homed` (NaN rows past the table), or None.
        feat_emb_dim: trailing embedding columns of the feature rows.
        tail_from_emb: (h,) bool, or None. Given, `feat` holds only the leading F - feat_emb_dim columns and a
            row's trailing ones are its `emb` row where True, NaN where False (the feature table repeats the
            embeddings: one copy serves both, `share_embedding_columns`).
    """

    def __init__(self, homed: np.ndarray, emb=None, has_emb=None, ann=None, feat=None, feat_emb_dim: int = 0,
                 tail_from_emb=None):
        self.homed = np.asarray(homed, np.int64)
        self.emb = emb
        self.has_emb = np.zeros(self.homed.size, bool) if has_emb is None else np.asarray(has_emb, bool)
        self.ann = ann
        self.feat = feat
        self.feat_emb_dim = int(feat_emb_dim)
        self.tail_from_emb = None if tail_from_emb is None else np.asarray(tail_from_emb, bool)
        self._exact = None  # without `ann`: an exact index over the users here, made on first search

    @classmethod
    def empty(cls) -> ShardUsers:
        return cls(np.zeros(0, np.int64))

    @classmethod
    def load(cls, model_dir: str | Path, shard: int, home: np.ndarray, shards: int) -> ShardUsers:
        """The rows of shard `shard` (of `shards`)'s users from the model at `model_dir` (`home`: the plan's
        home shard per user at the build). Tables the model lacks are left out (None)."""
        model_dir = Path(model_dir)
        homed = np.flatnonzero(np.asarray(home) == shard).astype(np.int64)
        emb = has = ann = feat = in_emb = ok = None
        emb_dim = 0
        p = model_dir / "gnn" / "embeddings.npy"
        if p.exists():
            table = np.load(p, mmap_mode="r")
            has = homed < table.shape[0]
            in_emb = has.copy()
            emb = np.zeros((homed.size, table.shape[1]), np.float32)
            emb[has] = _own_rows(p, table, shard, shards, homed[has])
            ann = _load_ann_shard(model_dir / "ann", shard, shards, table)
            if ann is not None:
                has &= ann.contains(homed)
            del table
        p = model_dir / "features"
        if (p / "features.json").exists():
            from pymk.features.store import FeatureStoreError, InProcessFeatureStore

            try:
                store = InProcessFeatureStore.load(p, int(np.asarray(home).size))  # memory-mapped, unread
            except FeatureStoreError as exc:
                raise ShardUsersError(str(exc)) from None
            ok = homed < store.table.shape[0]
            feat = np.full((homed.size, store.width), np.nan, np.float32)  # NaN rows past the table
            feat[ok] = _own_rows(p / "users.npy", store.table, shard, shards, homed[ok])
            emb_dim = store.emb_dim
            del store
        feat, tail = share_embedding_columns(feat, emb_dim, emb, in_emb, ok)
        return cls(homed, emb, has, ann, feat, emb_dim, tail)

    @classmethod
    def load_for(cls, model_dir: Path, shard: int) -> ShardUsers:
        """`load` with the model's own partition (none without one: an unsharded model)."""
        from pymk.graph.sharded import load_plan

        plan = load_plan(Path(model_dir) / "graph")
        return cls.empty() if plan is None else cls.load(model_dir, shard, plan.home, plan.shards)

    def describe(self) -> dict:
        """What this shard serves: the embedding width (0: none), the index kind, the feature width."""
        return {"emb_dim": 0 if self.emb is None else int(self.emb.shape[1]),
                "ann": None if self.ann is None else self.ann.kind,
                "feature_width": self._feature_width(),
                "feature_emb_dim": self.feat_emb_dim, "users": int(self.homed.size),
                "bytes": int(sum(x.nbytes for x in (self.emb, self.feat) if x is not None))}

    def _rows(self, users) -> tuple[np.ndarray, np.ndarray]:
        """Rows of `users` in `homed` and whether each is homed here. Shapes: (q,) -> (q,), (q,)."""
        return find_sorted(self.homed, users)

    def vectors(self, users) -> tuple[np.ndarray, np.ndarray]:
        """Query vectors of `users`: (q, d) float32 (zeros where none) and (q,) bool has-an-embedding."""
        pos, ok = self._rows(users)
        if self.emb is None:
            return np.zeros((ok.size, 0), np.float32), np.zeros(ok.size, bool)
        has = ok & self.has_emb[pos]
        return np.where(has[:, None], self.emb[pos], 0.0).astype(np.float32), has

    def _feature_width(self) -> int:
        if self.feat is None:
            return 0
        return int(self.feat.shape[1]) + (self.feat_emb_dim if self.tail_from_emb is not None else 0)

    def features(self, users) -> np.ndarray:
        """(q, F) float32 feature rows of `users`; NaN rows for users not homed here (or joined since)."""
        if self.feat is None:
            return np.zeros((np.asarray(users).size, 0), np.float32)
        pos, ok = self._rows(users)
        out = np.full((ok.size, self._feature_width()), np.nan, np.float32)
        lead = self.feat.shape[1]
        out[ok, :lead] = self.feat[pos[ok]]
        if self.tail_from_emb is not None:
            tail = ok & self.tail_from_emb[pos]
            out[tail, lead:] = self.emb[pos[tail]]
        return out

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k users homed here nearest to each query by inner product, best first.

        Args: queries (B, d) float32. Returns scores (B, k') float32, labels (B, k') int64 global indices,
        k' = min(k, users with an embedding here); -inf / -1 pad."""
        if self.ann is not None:
            return self.ann.search(queries, k)
        if self._exact is None:  # a model without an index: an exact one over the users here, made on first use
            from pymk.candidates.ann import AnnIndex

            self._exact = AnnIndex.build(self.emb[self.has_emb], self.homed[self.has_emb], kind="exact")
        return self._exact.search(queries, k)


def share_embedding_columns(feat, emb_dim: int, emb, in_emb, in_feat):
    """The feature rows without their trailing embedding columns when those are exactly the embedding rows
    (as the build writes them: the learned ranker's user features end with the user's embedding), so a server
    holds each vector once; else the rows unchanged.

    Args: feat (h, F) float32 or None; emb (h, d) or None; in_emb, in_feat (h,) bool: the user has a row in the
        embedding / feature table. Returns (feat or feat[:, :F - d], tail_from_emb (h,) bool or None).
    """
    if feat is None or emb is None or emb_dim <= 0 or emb.shape[1] != emb_dim or feat.shape[1] <= emb_dim:
        return feat, None
    tail = feat[:, -emb_dim:]
    both = in_feat & in_emb
    if not (np.array_equal(tail[both], emb[both]) and np.isnan(tail[in_feat & ~in_emb]).all()):
        return feat, None  # another table's vectors (an update that refreshed one of them): keep both copies
    return np.ascontiguousarray(feat[:, :-emb_dim]), both


SHARD_ROWS = "shards"  # beside a table: shards/<s>.npy (its rows of the users homed on s), shards/rows.json


def write_shard_rows(model_dir: str | Path) -> dict:
    """Writes, beside each per-user table of a sharded model (`gnn/embeddings.npy`, `features/users.npy`), the
    rows of each shard's homed users to `shards/<s>.npy` (users in index order; users past the table have none),
    with `shards/rows.json` naming the table's shape and the shard count. Nothing for an unsharded model.
    Returns {table: bytes written}."""
    from pymk.graph.sharded import load_plan

    model_dir = Path(model_dir)
    plan = load_plan(model_dir / "graph")
    out = {}
    if plan is None:
        return out
    for p in (model_dir / "gnn" / "embeddings.npy", model_dir / "features" / "users.npy"):
        if not p.exists():
            continue
        table = np.load(p, mmap_mode="r")
        d = p.parent / SHARD_ROWS
        d.mkdir(exist_ok=True)
        home = np.asarray(plan.home[:table.shape[0]])
        written = 0
        for s in range(plan.shards):
            rows = np.ascontiguousarray(table[np.flatnonzero(home == s)])
            np.save(d / f"{s}.npy", rows)
            written += rows.nbytes
        (d / "rows.json").write_text(json.dumps({"table": p.name, "shape": list(table.shape), "shards": plan.shards,
                                                 "digest": embedding_digest(table)}))
        out[str(p.relative_to(model_dir))] = written
    return out


def _own_rows(path: Path, table: np.ndarray, shard: int, shards: int, users: np.ndarray) -> np.ndarray:
    """Rows of `users` (sorted, homed on `shard`, all within the table): from the shard's own file when the
    build wrote one for this table, else from the memory-mapped whole table."""
    d = path.parent / SHARD_ROWS
    if not (d / "rows.json").exists():
        return np.asarray(table[users], np.float32)
    meta = json.loads((d / "rows.json").read_text())
    if meta.get("table") != path.name or meta.get("shards") != shards or meta.get("shape") != list(table.shape):
        raise ShardUsersError(f"{d / 'rows.json'}: rows of a {meta.get('shape')} table in {meta.get('shards')} "
                              f"shards; {path} is {list(table.shape)} in {shards}: rebuild the model")
    if meta.get("digest") != embedding_digest(table):
        raise ShardUsersError(f"{d / 'rows.json'}: rows of another {path.name} (digest {meta.get('digest')} vs "
                              f"{embedding_digest(table)}): rebuild the model")
    rows = np.load(d / f"{shard}.npy")
    if rows.shape != (users.size, table.shape[1]):
        raise ShardUsersError(f"{d / f'{shard}.npy'}: {rows.shape[0]} rows, shard {shard} homes {users.size} users "
                              f"of the table: rebuild the model")
    return rows


def _load_ann_shard(path: Path, shard: int, shards: int, table: np.ndarray):
    """Shard `shard` of the model's ANN index (None without one); refused when it was built for other
    embeddings or another shard count."""
    if not (path / "ann.json").exists():
        return None
    from pymk.candidates.ann import AnnError, AnnIndex, checked_ann_meta

    try:
        meta, config = checked_ann_meta(path, table)
    except AnnError as exc:
        raise ShardUsersError(str(exc)) from None
    if meta["shards"] != shards:
        raise ShardUsersError(f"{path / 'ann.json'}: an index of {meta['shards']} shard(s), the graph has {shards}; "
                              f"rebuild the model")
    return AnnIndex.load(path, f"shard-{shard:03d}", meta["kind"], meta["dim"], config, meta["search_param"])
