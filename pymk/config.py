"""One configuration object per run: every stage declares its defaults here; files override them.

A config file is TOML or JSON with the same nesting as `PymkConfig`, e.g.

    [candidates]
    k = 1000
    [candidates.fof]
    score = "aa"
    max_expand = 0
    [ranker]
    kind = "adamic_adar"

Unknown keys and wrongly typed values are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args, get_origin, get_type_hints

if TYPE_CHECKING:
    from pymk.gnn.config import GnnConfig


class ConfigError(ValueError):
    """A configuration value or key that pymk cannot use."""


@dataclass
class FofConfig:
    """Friends-of-friends source (`pymk.candidates.fof`)."""

    # the order in which Stage 1 keeps 2-hop candidates: cn | aa | ra, or auto: the build measures all three on
    # its internal split (pymk.candidates.order) and writes the best into the model's config
    score: str = "auto"
    max_expand: int = 0  # expand at most this many friends of a user (0 = all)


@dataclass
class PprConfig:
    """Personalized-PageRank source (`pymk.candidates.ppr`): reaches past two hops without training."""

    enabled: bool = True
    share: float = 0.2  # slots kept for PPR candidates that friends-of-friends did not find
    alpha: float = 0.15  # restart probability of the walk
    beta: float = 0.5  # rank by ppr / degree^beta (0: raw PPR, hub-biased; 1: degree-normalised)
    eps: float = 1e-5  # push threshold: work per user ~ 1 / (alpha * eps)
    rounds: int = 4  # a ranking tier's rounds of push calls to the shard servers (0: until every residual is
    # below eps * degree); the mass still to push when it stops bounds the L1 error (docs/BENCHMARKS.md)


@dataclass
class AnnConfig:
    """Embedding retrieval index (`pymk.candidates.ann`); see its docstring for the kinds' trade-offs."""

    kind: str = "auto"  # auto | exact | hnsw | ivf_flat | ivf_sq8 | ivf_pq (auto: exact below exact_below users)
    exact_below: int = 50_000
    hnsw_m: int = 32  # graph degree: memory and build time vs recall
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 64  # for k = calibrate_k (scaled with k); where calibration starts doubling
    nlist: int = 0  # IVF cells (0 = about 4 sqrt(n))
    nprobe: int = 0  # IVF cells probed: where calibration starts doubling (0 = from 1)
    pq_m: int = 0  # ivf_pq bytes per vector (0 = d / 4)
    target_recall: float = 0.97  # calibration target: recall@calibrate_k against exact search
    calibrate_k: int = 100
    calibrate_queries: int = 500
    rebuild_dead_share: float = 0.2  # compact an HNSW / exact index once this share of its slots are dead
    seed: int = 0


@dataclass
class CandidatesConfig:
    """Stage 1: which sources feed the candidate set and how large it is."""

    k: int = 1000
    fof: FofConfig = field(default_factory=FofConfig)
    popular_fill: bool = True  # top up short candidate lists with the most-connected users
    embedding_share: float = 0.1  # with GNN embeddings: slots kept for embedding neighbours (0 = off)
    ppr: PprConfig = field(default_factory=PprConfig)
    ann: AnnConfig = field(default_factory=AnnConfig)


@dataclass
class RankerConfig:
    """Stage 2: the model that orders Stage-1 candidates."""

    kind: str = "auto"  # auto | lightgbm | adamic_adar | resource_allocation | common_neighbors
    # auto: train LightGBM, serve whichever of it and the heuristics validates best
    objective: str = "lambdarank"  # lightgbm: lambdarank | binary | auto (both, keep the better on validation)
    holdout: float = 0.1  # lightgbm training labels: this share of the build graph's edges held out
    # which edges are held out: random (as the evaluation protocol draws them) | time (the latest: trains
    # for the future, but on a graph whose late edges differ in kind it misleads a random-split test)
    split: str = "random"
    train_users: int = 3000  # lightgbm: users per internal split whose Stage-1 lists make the training data
    splits: int = 5  # lightgbm: internal splits stacked (by time: the same split each time)
    # lightgbm: share of each training list's non-friends kept (all held-out friends are); more users at the
    # same training cost measured better than whole lists (docs/RESULTS.md)
    negatives: float = 0.15
    rounds: int = 300  # boosting rounds at most (early stopping on validation)
    learning_rate: float = 0.05
    num_leaves: int = 31
    seed: int = 0


@dataclass
class ShardingConfig:
    """Graph sharding (`pymk.graph.partition`): 1 shard = the unsharded CSR."""

    shards: int = 1
    method: str = "community"  # hash | community
    replication: float = 0.25  # extra adjacency entries allowed for replicas, as a share of the total
    balance: float = 1.10  # max / mean adjacency entries per shard (community method)


def _gnn_config():
    from pymk.gnn.config import GnnConfig

    return GnnConfig()


@dataclass
class PymkConfig:
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    gnn: GnnConfig = field(default_factory=_gnn_config)
    candidates: CandidatesConfig = field(default_factory=CandidatesConfig)
    ranker: RankerConfig = field(default_factory=RankerConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PymkConfig:
        cfg = _from_dict(cls, data or {}, "")
        cfg.validate()
        return cfg

    @classmethod
    def from_file(cls, path: str | Path | None) -> PymkConfig:
        if path is None:
            return cls()
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        text = path.read_text()
        try:
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot parse: {exc}") from None
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def validate(self) -> None:
        from pymk.candidates.fof import SCORES
        from pymk.ranking import RANKERS

        if self.candidates.k < 1:
            raise ConfigError(f"candidates.k must be >= 1, got {self.candidates.k}")
        if self.candidates.fof.score not in ("auto", *SCORES):
            raise ConfigError(f"candidates.fof.score must be one of {['auto', *sorted(SCORES)]}, "
                              f"got {self.candidates.fof.score!r}")
        if not 0.0 <= self.candidates.embedding_share <= 1.0:
            raise ConfigError("candidates.embedding_share must be in [0, 1]")
        ppr = self.candidates.ppr
        if not 0.0 <= ppr.share <= 1.0 or not 0.0 <= self.candidates.embedding_share <= 1.0 \
                or ppr.share + self.candidates.embedding_share > 1.0:
            raise ConfigError("candidates.ppr.share and candidates.embedding_share must be in [0, 1] and sum to <= 1")
        if not 0.0 < ppr.alpha < 1.0:
            raise ConfigError(f"candidates.ppr.alpha must be in (0, 1), got {ppr.alpha}")
        if not 0.0 < ppr.eps < 1.0:
            raise ConfigError(f"candidates.ppr.eps must be in (0, 1), got {ppr.eps}")
        if ppr.rounds < 0:
            raise ConfigError(f"candidates.ppr.rounds must be >= 0, got {ppr.rounds}")
        if not 0.0 <= ppr.beta <= 2.0:
            raise ConfigError(f"candidates.ppr.beta must be in [0, 2], got {ppr.beta}")
        ann = self.candidates.ann
        from pymk.candidates.ann import KINDS

        if ann.kind not in ("auto", *KINDS):
            raise ConfigError(f"candidates.ann.kind must be one of {['auto', *KINDS]}, got {ann.kind!r}")
        if not 0.0 < ann.target_recall <= 1.0:
            raise ConfigError(f"candidates.ann.target_recall must be in (0, 1], got {ann.target_recall}")
        for name in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "calibrate_k", "calibrate_queries"):
            if getattr(ann, name) < 1:
                raise ConfigError(f"candidates.ann.{name} must be >= 1, got {getattr(ann, name)}")
        for name in ("nlist", "nprobe", "pq_m", "exact_below"):
            if getattr(ann, name) < 0:
                raise ConfigError(f"candidates.ann.{name} must be >= 0, got {getattr(ann, name)}")
        if not 0.0 < ann.rebuild_dead_share <= 1.0:
            raise ConfigError("candidates.ann.rebuild_dead_share must be in (0, 1]")
        if self.candidates.fof.max_expand < 0:
            raise ConfigError("candidates.fof.max_expand must be >= 0")
        from pymk.graph.partition import METHODS

        if self.sharding.shards < 1:
            raise ConfigError(f"sharding.shards must be >= 1, got {self.sharding.shards}")
        if self.sharding.method not in METHODS:
            raise ConfigError(f"sharding.method must be one of {list(METHODS)}, got {self.sharding.method!r}")
        if not 0 <= self.sharding.replication <= 10:
            raise ConfigError(f"sharding.replication must be in [0, 10], got {self.sharding.replication}")
        if self.sharding.balance < 1.0:
            raise ConfigError(f"sharding.balance must be >= 1.0, got {self.sharding.balance}")
        try:
            self.gnn.validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.ranker.kind not in (*RANKERS, "lightgbm", "auto"):
            raise ConfigError(f"ranker.kind must be one of {sorted([*RANKERS, 'lightgbm', 'auto'])}, "
                              f"got {self.ranker.kind!r}")
        if self.ranker.objective not in ("auto", "lambdarank", "binary"):
            raise ConfigError(f"ranker.objective must be auto | lambdarank | binary, got {self.ranker.objective!r}")
        if self.ranker.split not in ("time", "random"):
            raise ConfigError(f"ranker.split must be time | random, got {self.ranker.split!r}")
        if not 0.0 < self.ranker.negatives <= 1.0:
            raise ConfigError(f"ranker.negatives must be in (0, 1], got {self.ranker.negatives}")
        if not 0.0 < self.ranker.holdout < 0.5:
            raise ConfigError(f"ranker.holdout must be in (0, 0.5), got {self.ranker.holdout}")
        for name in ("train_users", "rounds", "num_leaves", "splits"):
            if getattr(self.ranker, name) < 1:
                raise ConfigError(f"ranker.{name} must be >= 1, got {getattr(self.ranker, name)}")


def _from_dict(cls, data: dict[str, Any], prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table, got {type(data).__name__}")
    from pymk.gnn.config import GnnConfig

    hints = get_type_hints(cls, localns={"GnnConfig": GnnConfig})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]!s} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            kwargs[name] = _from_dict(typ, value, f"{prefix}{name}.")
            continue
        if get_origin(typ) is tuple:
            if not isinstance(value, list | tuple) or not all(isinstance(v, get_args(typ)[0]) for v in value):
                raise ConfigError(f"config key {prefix}{name} must be a list of {get_args(typ)[0].__name__}")
            kwargs[name] = tuple(value)
            continue
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
        if not ok:
            raise ConfigError(f"config key {prefix}{name} must be {typ.__name__}, got {value!r}")
        kwargs[name] = value
    return cls(**kwargs)
