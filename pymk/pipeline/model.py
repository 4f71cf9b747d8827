"""A built model directory, loaded: the graph, the config, Stage 1 and the ranker, ready to answer."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pymk.candidates.base import CandidateBatch
from pymk.candidates.stage1 import Stage1
from pymk.config import PymkConfig
from pymk.graph.snapshot import CSRGraph
from pymk.pipeline.standing import Standing
from pymk.ranking import RankedBatch, make_ranker

MODEL_FORMAT = "pymk-model"
MODEL_FORMAT_VERSION = 1


class ModelError(RuntimeError):
    """A model directory that cannot be loaded."""


def write_model_meta(path: Path, meta: dict) -> None:
    """The one writer of a model directory's model.json (atomic: written beside, then renamed)."""
    path = Path(path)
    tmp = path / "model.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, path / "model.json")


def read_model_meta(path) -> dict:
    """The one reader of a model directory's model.json: refuses a missing file or another format version."""
    from pymk.artifacts import read_artifact_meta

    return read_artifact_meta(Path(path), "model.json", MODEL_FORMAT, MODEL_FORMAT_VERSION, ModelError,
                              what="pymk model", fix="run `pymk build`")[1]


def model_version(meta: dict) -> str:
    """pymk version + a digest of the model's metadata (config, build time, stages)."""
    digest = hashlib.sha1(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:8]
    return f"{meta.get('pymk_version', '?')}-{digest}"


def _redis_client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def has_feature_table(path: Path) -> bool:
    """Whether the model at `path` has a learned ranker's user-feature table (what Redis may serve)."""
    return (Path(path) / "features" / "features.json").exists()


def has_shard_plan(path: Path) -> bool:
    """Whether the model at `path` was built with graph shards (adjacency lists Redis may serve)."""
    return (Path(path) / "graph" / "shards.json").exists()


def feature_prefix(meta: dict) -> str:
    return f"pymk:features:{model_version(meta)}"


def _redis_features(client, path: Path, meta: dict):
    """The learned ranker's user features in Redis, checked against the model's table."""
    from pymk.features.store import RedisFeatureStore

    info = json.loads((path / "features" / "features.json").read_text())
    width = int(np.load(path / "features" / "users.npy", mmap_mode="r").shape[1])
    prefix = feature_prefix(meta)
    published = client.get(f"{prefix}:meta")
    if published is None:
        raise ModelError(f"{path}: its features are not in Redis under {prefix}; run `pymk publish` first")
    if json.loads(published).get("width") != width:
        raise ModelError(f"{prefix}: published features are {json.loads(published).get('width')} wide, "
                         f"the model's {width}; run `pymk publish` again")
    return RedisFeatureStore(client, prefix, width, info["emb_dim"])


@dataclass
class Model:
    """Recommendations from one model directory. Users are dense indices; see `index_of`.

    `graph` is a `LiveGraph` (snapshot + delta): `apply` changes it, and Stage 1, the ranker's features, the
    filters and the explanations read it as it is now. A sharded model's friends-of-friends reads its shard
    servers (`servers`, a `ShardRouter`: each shard's own snapshot + delta, in process or on Ray), which
    `apply` changes too; `store` is what the traversal reads (the servers, or Redis in front of them)."""

    path: Path | None
    meta: dict
    config: PymkConfig
    graph: CSRGraph

    plan: object = None  # a ShardPlan when built with shards > 1
    store: object = None  # the shard store the traversal reads (in process unless given)
    feature_store: object = None  # the learned ranker's user features (DIR/features/ unless given)
    servers: object = None  # a sharded model's ShardRouter (in-process shard servers unless given)
    embeddings: np.ndarray | None = None  # (n, d) GNN embeddings (DIR/gnn/embeddings.npy unless given)
    ann: object = None  # the ANN index over them (DIR/ann/ unless given), None: exact search
    tier: bool = False  # a stateless ranking tier: `graph` is a `TierGraph`, every list read from `servers`

    def __post_init__(self):
        """Assembles the parts not given from the directory: embeddings, ANN index, shard servers, Stage 1,
        the ranker (and its feature store). After this only `apply` and the `use_*` methods change them."""
        # what the version remembers beside its snapshot (`pymk update`): into a living graph; its blocks and
        # dismissals are the service's (`Service`) and the CLI's to apply
        self.standing = Standing.load(self.path) if self.path is not None else Standing.empty()
        if hasattr(self.graph, "erased_ids"):
            self.standing.install(self.graph)
        self.served = {}  # a ranking tier: what its shard servers hold besides lists (embeddings, index, features)
        if self.tier:
            self.served = self.servers.describe()
        elif self.embeddings is None:
            self.embeddings = self._open_embeddings()
        if self.ann is None and self.embeddings is not None:
            self.ann = self._open_ann()
        traversal = None
        if self.plan is not None:
            from pymk.graph.sharded import ShardedGraph

            if self.servers is None:
                from pymk.serving.shard_router import in_process_servers

                self.servers = in_process_servers(self.path, self.snapshot, self.plan, users=False)
            elif self.servers.plan is not self.plan:
                if not np.array_equal(self.servers.plan.home, self.plan.home):
                    raise ModelError(f"{self.path}: its shard servers serve another partition of its users")
                self.plan = self.servers.plan  # one plan: new users' home shards are the servers'
            self.store = self.store or self.servers
            traversal = ShardedGraph(self.plan, self.store)
        self.sharded = traversal
        pool = None
        if self.tier:
            if self.servers is None:
                raise ModelError(f"{self.path}: a ranking tier needs shard servers (build with --shards S)")
            pool = self.servers.popular(4 * self.config.candidates.k) if self.config.candidates.popular_fill else None
        self.stage1 = Stage1(self.graph, self.config.candidates, traversal=traversal, embeddings=self.embeddings,
                             ann=self.ann, pool=pool)
        self.ranker = self._load_ranker()
        self.version = model_version(self.meta)

    def _load_ranker(self):
        kind = self.config.ranker.kind
        if kind == "auto":  # the build measured which ranker to serve
            kind = self.meta.get("stages", {}).get("ranker", {}).get("chosen", "adamic_adar")
        self.ranker_kind = kind
        if kind != "lightgbm":
            return make_ranker(kind)
        from pymk.features.store import FeatureStoreError, InProcessFeatureStore
        from pymk.ranking.learned import LearnedRanker, RankerError

        if self.path is None:
            raise ModelError("a learned ranker needs a model directory")
        try:
            if self.tier and self.feature_store is None and self.served.get("feature_width"):
                from pymk.serving.tier import ShardFeatures  # each user's row on its home shard server

                self.features = ShardFeatures(self.servers, self.served["feature_width"],
                                              self.served["feature_emb_dim"])
            else:
                self.features = self.feature_store or InProcessFeatureStore.load(self.path / "features",
                                                                               self.graph.num_users)
            return LearnedRanker.load(self.path / "ranker", self.graph, self.features)
        except (RankerError, FeatureStoreError) as exc:
            raise ModelError(str(exc)) from None

    @classmethod
    def load(cls, path: str | os.PathLike, *, shards: int | None = None, redis_url: str | None = None,
             redis_client=None, servers=None, tier: bool = False) -> Model:
        """Opens a model dir. `shards`: refuse a model built with another shard count. `redis_url` (or a
        ready `redis_client`, e.g. with the service's timeouts): read what `pymk publish` put in Redis: a
        sharded model's adjacency lists and the learned ranker's user features. `servers`: a sharded
        model's `ShardRouter` (e.g. over Ray actors; default: shard servers in this process). `tier`: open it
        as a stateless ranking tier over `servers`, mapping no adjacency (`pymk.serving.tier_graph`)."""
        from pymk.graph.sharded import load_plan

        path = Path(path)
        meta = read_model_meta(path)
        config = PymkConfig.from_dict(meta["config"])
        plan = load_plan(path / "graph", expect_shards=shards)
        store = features = None
        if redis_url is not None or redis_client is not None:
            has_features = has_feature_table(path)
            if plan is None and not has_features:
                raise ModelError(f"{path} has nothing Redis serves: neither graph shards (build with --shards S) "
                                 f"nor a learned ranker's features")
            client = redis_client if redis_client is not None else _redis_client(redis_url)
            if plan is not None:
                from pymk.graph.shard_store import RedisShardStore

                store = RedisShardStore(client, prefix=f"pymk:graph:{model_version(meta)}", plan=plan)
            if has_features:
                features = _redis_features(client, path, meta)
        if tier:
            return cls._load_tier(path, meta, config, plan, servers, features)
        from pymk.graph.live import LiveGraph

        graph = LiveGraph(CSRGraph.load(path / "graph"))  # the served graph lives: snapshot + delta
        if store is not None and servers is None:
            from pymk.serving.shard_router import in_process_servers

            servers = in_process_servers(path, graph.snapshot, plan, users=False)
        if store is not None:  # lists changed since the build are read from the shard servers, not Redis
            from pymk.serving.shard_router import DeltaOverlay

            store = DeltaOverlay(store, servers)
        return cls(path, meta, config, graph, plan, store, features, servers)

    @classmethod
    def _load_tier(cls, path: Path, meta: dict, config, plan, servers, features) -> Model:
        """The ranking tier's model: ids, plan and ranker; lists, embeddings, the ANN index and the user features
        on `servers` (a feature store given, e.g. Redis, stands for theirs)."""
        from pymk.serving.tier_graph import TierGraph

        if plan is None:
            raise ModelError(f"{path} was built unsharded: a ranking tier serves a model built with --shards S")
        snap = CSRGraph.load(path / "graph")  # memory-mapped: only ids and the time span are read
        if servers is None:  # in this process (tests): from the shard files, else from the snapshot
            from pymk.serving.shard_router import in_process_servers

            servers = in_process_servers(path, snap, plan)
        graph = TierGraph(np.array(snap.ids), servers, num_edges=snap.num_edges)
        if "ts_span" in snap.meta:  # recorded by the build; older snapshots: read once here
            graph.time_span = tuple(float(t) for t in snap.meta["ts_span"])
        elif snap.ts is not None and len(snap.ts):
            graph.time_span = (float(np.min(snap.ts)), float(np.max(snap.ts)))
        del snap  # unmapped: the tier keeps no adjacency
        return cls(path, meta, config, graph, plan, servers, features, servers, tier=True)

    def apply(self, events):
        """Applies events from the log (friendships added and removed, new users, erasures) to the living
        graph: the one path that changes a served model (`pymk.pipeline.changes`). Returns a `Change`."""
        from pymk.pipeline.changes import apply_events

        return apply_events(self, events)

    @property
    def snapshot(self) -> CSRGraph:
        """The build's CSR snapshot (what training and publishing read), without the live delta."""
        return getattr(self.graph, "snapshot", self.graph)

    # ------------------------------------------------------------------------------ parts a worker replaces
    # A serving worker puts live or Redis-backed parts in front of the ones read from the directory; these are
    # the only ways they change, so every reader (Stage 1, the ranker) moves with them.

    def use_embeddings(self, emb, *, live: np.ndarray | None = None) -> None:
        """Stage 1 reads `emb` (the tiered store, a live matrix, new users' rows); `live`: the refreshed
        (n, d) matrix `embeddings` returns from now on."""
        if live is not None:
            self.embeddings = live
        self.stage1.embeddings = emb

    def use_ann(self, ann) -> None:
        """Stage 1 searches `ann` (e.g. the stream worker's locked index over the live vectors)."""
        self.ann = ann
        self.stage1.ann = ann

    def use_feature_store(self, store) -> None:
        """The learned ranker reads its user features from `store` (e.g. Redis with its embedded twin)."""
        self.feature_store = self.features = store
        if hasattr(self.ranker, "store"):
            self.ranker.store = store

    def use_shard_store(self, store) -> None:
        """The sharded traversal reads adjacency lists from `store` (lists changed since the build from the
        shard servers)."""
        from pymk.serving.shard_router import DeltaOverlay

        if not isinstance(store, DeltaOverlay) and store is not self.servers:
            store = DeltaOverlay(store, self.servers)
        self.store = store
        if self.sharded is not None:
            self.sharded.store = store

    def index_of(self, user_ids) -> np.ndarray:
        """Dense indices of external user ids (-1 for unknown). Shapes: (q,) -> (q,)."""
        return self.graph.index_of(user_ids)

    def _open_embeddings(self) -> np.ndarray | None:
        p = self.path / "gnn" / "embeddings.npy" if self.path else None
        emb = np.load(p, mmap_mode="r") if p is not None and p.exists() else None
        # fewer rows than users is allowed: users who joined since have no embedding yet
        if emb is not None and emb.shape[0] > self.graph.num_users:
            raise ModelError(f"{p}: {emb.shape[0]} embeddings for {self.graph.num_users} users")
        return emb

    def _open_ann(self):
        p = self.path / "ann" if self.path else None
        if p is None or not (p / "ann.json").exists():
            return None
        from pymk.candidates.ann import AnnError, load_ann

        try:
            return load_ann(p, self.embeddings)
        except AnnError as exc:
            raise ModelError(str(exc)) from None

    def embedding_candidates(self, users, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Embedding retrieval (the ANN index, else exact), self and friends excluded.

        Users without an embedding get an empty row. Returns (scores, idx), (B, k), -inf / -1 padded.
        """
        if self.tier and self.served.get("emb_dim"):  # the vectors and the index are on the shard servers
            from pymk.serving.tier import TierReads

            users = np.asarray(users, np.int64).ravel()
            reads = TierReads(self.servers, users, candidate_lists=False, served=self.served)
            return self.stage1.embedding_rows(users, k, friends=reads.friends_graph, reads=reads)
        if self.embeddings is None:
            raise ModelError(f"{self.path} has no embeddings: build with gnn.enabled = true or run `pymk train`")
        return self.stage1.embedding_rows(users, k)

    def candidates(self, users, *, k: int | None = None, blocked=None, sources=None) -> CandidateBatch:
        """Stage 1 (`Stage1.generate`; `sources`: only these), read from the shard servers in a ranking tier."""
        reads = None
        if self.tier:  # every list this batch reads comes from the shard servers, fresh per request
            from pymk.serving.tier import ShardFeatures, TierReads

            pc = self.config.candidates.ppr
            learned = hasattr(self.ranker, "predict")
            reads = TierReads(self.servers, np.asarray(users, np.int64).ravel(), candidate_lists=learned,
                              ppr=pc if pc.enabled else None, served=self.served,
                              features=learned and isinstance(self.features, ShardFeatures),
                              k=self.config.candidates.k if k is None else k)
        return self.stage1.generate(users, k=k, blocked=blocked, sources=sources, reads=reads)

    def recommend(self, users, k: int, *, blocked=None) -> RankedBatch:
        """Top-k recommendations for dense user indices (Stage 1 then the ranker)."""
        ck = max(k, self.config.candidates.k)
        return self.ranker.rank(self.candidates(users, k=ck, blocked=blocked), k)
