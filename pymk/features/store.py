"""Feature store: per-user features behind one interface, in process (default) or in Redis.

A user's features are one float32 vector (the columns of `USER_COLUMNS`, then its embedding when the
model has one). `fetch(users)` returns them for a user and its ~1,000 candidates at once:
    InProcessFeatureStore   rows of an (n, F) array, memory-mapped from the model dir.
    RedisFeatureStore       one packed little-endian float32 string per user under
                            `{prefix}:u:{dense index}`, written by `publish`, read with ONE `MGET`
                            (one round trip for the whole batch).
Users with no stored features (joined after the build) get NaN rows, which the ranker treats as
missing (LightGBM routes NaN down its learned default branch) and which are reported as degraded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pymk.artifacts import read_artifact_meta

USER_COLUMNS = ("degree", "log_degree", "first_ts", "last_ts")
STORE_FORMAT = "pymk-features"
STORE_FORMAT_VERSION = 1


class FeatureStoreError(RuntimeError):
    """A feature table that does not fit the model it is used with."""


def user_feature_table(graph, embeddings: np.ndarray | None = None) -> np.ndarray:
    """(n, F) float32: degree, log(1 + degree), first and last friendship time (NaN without
    timestamps), then the embedding columns if given."""
    deg = np.asarray(graph.degree, np.float64)
    cols = [deg, np.log1p(deg)]
    n = graph.num_users
    if graph.ts is not None and len(graph.ts):
        ts = np.asarray(graph.ts)  # reduced in its own dtype: a float copy would cost 8 bytes per entry
        ptr = np.asarray(graph.indptr, np.int64)
        has = np.diff(ptr) > 0
        first = np.full(n, np.nan)
        last = np.full(n, np.nan)
        first[has] = np.minimum.reduceat(ts, ptr[:-1][has])
        last[has] = np.maximum.reduceat(ts, ptr[:-1][has])
        cols += [first, last]
    else:
        cols += [np.full(n, np.nan), np.full(n, np.nan)]
    table = np.stack(cols, axis=1).astype(np.float32)
    if embeddings is not None:
        emb = np.full((n, embeddings.shape[1]), np.nan, np.float32)
        emb[: embeddings.shape[0]] = embeddings  # users who joined after the embeddings: NaN
        table = np.concatenate([table, emb], axis=1)
    return table


class InProcessFeatureStore:
    """Rows of an (n, F) float32 table. Args: table; emb_dim: trailing embedding columns (0: none)."""

    def __init__(self, table: np.ndarray, emb_dim: int = 0):
        self.table = table
        self.emb_dim = emb_dim
        self.round_trips = 0

    @property
    def width(self) -> int:
        return int(self.table.shape[1])

    def fetch(self, users: np.ndarray) -> np.ndarray:
        """(m,) dense indices -> (m, F) float32; NaN rows for unknown users (-1 or past the table)."""
        users = np.asarray(users, np.int64)
        out = np.full((users.size, self.width), np.nan, np.float32)
        ok = (users >= 0) & (users < self.table.shape[0])
        out[ok] = self.table[users[ok]]
        self.round_trips += 1
        return out

    @classmethod
    def of_graph(cls, graph, embeddings: np.ndarray | None = None) -> InProcessFeatureStore:
        """The user-feature table of `graph` (`user_feature_table`), with the embedding columns if given."""
        return cls(user_feature_table(graph, embeddings), 0 if embeddings is None else embeddings.shape[1])

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "users.npy", self.table)
        meta = {"format": STORE_FORMAT, "format_version": STORE_FORMAT_VERSION, "columns": list(USER_COLUMNS),
                "emb_dim": self.emb_dim, "users": int(self.table.shape[0])}
        (path / "features.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: Path, num_users: int) -> InProcessFeatureStore:
        meta_path, meta = read_artifact_meta(path, "features.json", STORE_FORMAT, STORE_FORMAT_VERSION,
                                             FeatureStoreError, what="feature table", fix="rebuild the model")
        if meta.get("columns") != list(USER_COLUMNS):
            raise FeatureStoreError(f"{meta_path}: feature table columns {meta.get('columns')} differ from this "
                                    f"pymk's {list(USER_COLUMNS)}; rebuild the model")
        table = np.load(path / "users.npy", mmap_mode="r")
        if table.shape[0] > num_users:
            raise FeatureStoreError(f"{path}: {table.shape[0]} feature rows for {num_users} users")
        return cls(table, meta["emb_dim"])


class RedisFeatureStore:
    """The same rows in Redis: one packed float32 string per user, a batch read = one MGET."""

    def __init__(self, client, prefix: str, width: int, emb_dim: int = 0):
        self.client = client
        self.prefix = prefix
        self._width = width
        self.emb_dim = emb_dim
        self.round_trips = 0

    @property
    def width(self) -> int:
        return self._width

    def key(self, user: int) -> str:
        return f"{self.prefix}:u:{user}"

    def publish(self, table: np.ndarray, *, batch: int = 10_000, progress=None) -> int:
        """Writes every row (pipelined, idempotent) plus a meta key; returns rows written."""
        table = np.ascontiguousarray(table, "<f4")
        if table.shape[1] != self._width:
            raise FeatureStoreError(f"table has {table.shape[1]} columns, the store {self._width}")
        for s in range(0, table.shape[0], batch):
            pipe = self.client.pipeline(transaction=False)
            for u in range(s, min(table.shape[0], s + batch)):
                pipe.set(self.key(u), table[u].tobytes())
            pipe.execute()
            if progress is not None:
                progress(min(batch, table.shape[0] - s))
        self.client.set(f"{self.prefix}:meta", json.dumps({"width": self._width, "users": int(table.shape[0]),
                                                            "emb_dim": self.emb_dim}))
        return int(table.shape[0])

    def fetch(self, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users, np.int64)
        out = np.full((users.size, self._width), np.nan, np.float32)
        ok = np.flatnonzero(users >= 0)
        if ok.size:
            head = f"{self.prefix}:u:"
            raw = self.client.mget([head + str(u) for u in users[ok].tolist()])
            self.round_trips += 1
            blob = b"".join(x for x in raw if x is not None)
            if None not in raw and len(blob) == 4 * self._width * ok.size:  # all present: one copy
                out[ok] = np.frombuffer(blob, "<f4").reshape(ok.size, self._width)
                return out
            for i, blob in zip(ok.tolist(), raw, strict=True):
                if blob is not None:
                    if len(blob) != 4 * self._width:
                        raise FeatureStoreError(f"{self.key(int(users[i]))}: {len(blob)} bytes, expected "
                                                f"{4 * self._width} (published by another model?)")
                    out[i] = np.frombuffer(blob, "<f4")
        return out
