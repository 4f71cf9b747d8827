"""Tiered embedding store: the query vectors of the embedding source, hot in Redis, cold on disk.

    embedded default  the model's float32 matrix (DIR/gnn/embeddings.npy), memory-mapped
    hot tier          Redis, the `hot_users` most active users (by degree, the activity the build knows),
                      one key per user `pymk:emb:{model version}:{user}`
    cold tier         RocksDB (`rocksdict`) in DIR/serving/emb_cold, every user, key = user index (8 bytes)
Both tiers hold int8 vectors with a per-vector float32 scale (`quantize_int8`): d + 4 bytes a user
instead of 4 d (132 vs 512 bytes at 128-d). A lookup reads the hot tier (one MGET), then the cold tier
for the rest (one multi-get), then the memory-mapped matrix if both miss; each answer is counted by tier.
With Redis down the hot tier is skipped (the lookup is slower, never failed).

`TieredEmbeddings` looks like the matrix to Stage 1 (`shape`, `emb[users]`), so the ANN source reads its
queries through it unchanged. Exact search (no ANN index) needs the whole matrix and keeps the default.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from pymk.serving.redis_link import RedisDown

COLD_DIR = "serving/emb_cold"
log = logging.getLogger("pymk.serving")


def quantize_int8(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-vector symmetric int8. Shapes: (n, d) float -> q (n, d) int8, scale (n,) float32 (x ~ q * scale)."""
    emb = np.asarray(emb, np.float32)
    # floored at the smallest normal float: a subnormal scale loses the precision the bound relies on
    scale = np.maximum(np.abs(emb).max(axis=1) / 127.0, np.finfo(np.float32).tiny)
    q = np.clip(np.rint(emb / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def dequantize_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * scale[:, None]


def pack(emb: np.ndarray) -> list[bytes]:
    """One blob per row: d int8 values then the float32 scale (little-endian)."""
    q, scale = quantize_int8(emb)
    rows = np.concatenate([q.view(np.uint8), scale.astype("<f4")[:, None].view(np.uint8)], axis=1)
    return [r.tobytes() for r in rows]


def unpack(blobs: list[bytes], d: int) -> np.ndarray:
    """Inverse of `pack`. Shapes: m blobs of d + 4 bytes -> (m, d) float32."""
    raw = np.frombuffer(b"".join(blobs), np.uint8).reshape(len(blobs), d + 4)
    q = raw[:, :d].view(np.int8)
    scale = raw[:, d:].copy().view("<f4").ravel()
    return dequantize_int8(q, scale)


def _key(u: int) -> bytes:
    return int(u).to_bytes(8, "little", signed=False)


class ColdTierError(OSError):
    """The cold tier could not be written (disk full, unwritable); the tier in place, if any, is untouched."""


def write_cold(path: Path, emb: np.ndarray, *, version: str = "", batch: int = 50_000, progress=None) -> int:
    """Writes every user's int8 vector to a RocksDB at `path`, and `path`.json naming the model version it
    belongs to. The database is written beside `path` and moved into place whole, the .json last: a write that
    fails (disk full, unwritable) leaves the tier that was there, and raises `ColdTierError` naming the path."""
    import shutil

    from rocksdict import Options, Rdict, WriteBatch

    tmp = path.with_name(f".{path.name}.writing")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        db = Rdict(str(tmp), Options(raw_mode=True))
        try:
            for s in range(0, emb.shape[0], batch):
                wb = WriteBatch(raw_mode=True)
                for u, blob in enumerate(pack(emb[s:s + batch]), start=s):
                    wb.put(_key(u), blob)
                db.write(wb)
                if progress:
                    progress(min(batch, emb.shape[0] - s))
            db.flush()
        finally:
            db.close()
        meta = json.dumps({"format": "pymk-emb-cold", "model_version": version, "users": int(emb.shape[0]),
                           "dim": int(emb.shape[1])})
        info = path.with_suffix(".json")
        info.with_name(f".{info.name}.writing").write_text(meta)
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            path.rename(old)  # a service reading it keeps its open files
        tmp.rename(path)
        info.with_name(f".{info.name}.writing").replace(info)
        shutil.rmtree(old, ignore_errors=True)
    except Exception as exc:  # rocksdict raises its own exception types for I/O errors
        shutil.rmtree(tmp, ignore_errors=True)
        raise ColdTierError(f"writing the cold embedding tier at {path} failed: {exc} (disk full or not "
                            f"writable?); the tier that was there is unchanged") from exc
    return int(emb.shape[0])


def hot_prefix(version: str) -> str:
    return f"pymk:emb:{version}"


def hot_users(graph, count: int) -> np.ndarray:
    """The `count` most active users (highest degree; ties: smaller index)."""
    count = min(count, graph.num_users)
    return np.argsort(-np.asarray(graph.degree), kind="stable")[:count].astype(np.int64)


def publish_hot(client, version: str, emb: np.ndarray, users: np.ndarray, *, batch: int = 10_000,
                progress=None) -> int:
    """Writes `users`' int8 vectors to Redis (pipelined, idempotent)."""
    prefix = hot_prefix(version)
    for s in range(0, users.size, batch):
        part = users[s:s + batch]
        pipe = client.pipeline(transaction=False)
        for u, blob in zip(part.tolist(), pack(emb[part]), strict=True):
            pipe.set(f"{prefix}:{u}", blob)
        pipe.execute()
        if progress:
            progress(part.size)
    return int(users.size)


class TieredEmbeddings:
    """Args: fallback: the (n, d) float32 matrix (memory-mapped); link: the service's RedisLink (None: no
    hot tier); version: the model version (hot keys); cold_path: the RocksDB (None: no cold tier);
    metrics: a `Metrics` (tier counters) or None."""

    def __init__(self, fallback: np.ndarray, *, link=None, version: str = "", cold_path: Path | None = None,
                 metrics=None):
        self.fallback = fallback
        self.shape = fallback.shape
        self.d = int(fallback.shape[1])
        self.link = link
        self.prefix = hot_prefix(version)
        self.metrics = metrics
        self.counts = {"hot": 0, "cold": 0, "mmap": 0, "cold_error": 0}
        self.cold_failed = False
        self.live: np.ndarray | None = None  # (n,) bool: refreshed since the tiers were written (stream)
        self.cold = None
        if cold_path is not None:
            from rocksdict import AccessType, Options, Rdict

            self.cold = Rdict(str(cold_path), Options(raw_mode=True), access_type=AccessType.read_only())

    def _count(self, tier: str, n: int) -> None:
        if n:
            self.counts[tier] += n
            if self.metrics is not None:
                self.metrics.embedding_tier.labels(tier).inc(n)

    def __getitem__(self, users) -> np.ndarray:
        users = np.atleast_1d(np.asarray(users, np.int64))
        out = np.empty((users.size, self.d), np.float32)
        todo = np.arange(users.size)
        if self.live is not None:  # newer in the in-memory matrix than in the tiers
            todo = todo[~self.live[users]]
        if self.link is not None and todo.size:
            keys = [f"{self.prefix}:{u}" for u in users[todo].tolist()]
            try:
                raw = self.link.call(lambda c: c.mget(keys))
            except RedisDown:
                raw = [None] * todo.size
            got = [i for i, b in enumerate(raw) if b is not None]
            if got:
                out[todo[got]] = unpack([raw[i] for i in got], self.d)
            self._count("hot", len(got))
            todo = todo[[i for i, b in enumerate(raw) if b is None]]
        if self.cold is not None and todo.size:
            try:
                blobs = self.cold.get([_key(u) for u in users[todo].tolist()])
            except Exception as exc:  # noqa: BLE001 - an unreadable disk: the memory-mapped matrix answers
                self._count("cold_error", int(todo.size))
                if not self.cold_failed:
                    log.warning("cold embedding tier unreadable (%s): served from the memory-mapped matrix", exc)
                self.cold_failed = True
                blobs = [None] * todo.size
            got = [j for j, b in enumerate(blobs) if b is not None]
            if got:
                out[todo[got]] = unpack([blobs[j] for j in got], self.d)
            self._count("cold", len(got))
            todo = np.delete(todo, got)
        if todo.size:
            out[todo] = self.fallback[users[todo]]
            self._count("mmap", int(todo.size))
        return out

    def __array__(self, dtype=None, copy=None):  # exact search wants the whole matrix
        return np.asarray(self.fallback, dtype)

    def close(self) -> None:
        if self.cold is not None:
            self.cold.close()
            self.cold = None


def attach_tiered_embeddings(svc) -> TieredEmbeddings | None:
    """Puts a `TieredEmbeddings` in front of the model's embeddings when it has an ANN index and tiers
    (`pymk publish --hot-users N` wrote the cold tier and, in the service's Redis, the hot one)."""
    m = svc.model
    if m.path is None or m.embeddings is None or m.ann is None:
        return None
    cold = m.path / COLD_DIR if svc.settings.cold_path is None else Path(svc.settings.cold_path)
    if cold.exists():
        info = json.loads(cold.with_suffix(".json").read_text()) if cold.with_suffix(".json").exists() else {}
        if info.get("model_version") != m.version or info.get("dim") != m.embeddings.shape[1]:
            log.warning("%s was written for model %s, this is %s: cold tier not used; run `pymk publish "
                        "--hot-users N` again", cold, info.get("model_version"), m.version)
            cold = None
    else:
        cold = None
    if cold is None and svc.link is None:
        return None
    tiered = TieredEmbeddings(m.embeddings, link=svc.link, version=m.version,
                              cold_path=cold, metrics=svc.metrics)
    m.use_embeddings(tiered)
    return tiered
