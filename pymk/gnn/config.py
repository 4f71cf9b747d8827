"""GNN settings, importable without torch (the config file of every run can name them)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

KINDS = ("sage", "gcn", "gat")


class CheckpointError(RuntimeError):
    """A checkpoint that does not fit the graph or this version of pymk."""


class DeviceError(RuntimeError):
    """`gnn.device` names a device this machine does not have."""


@dataclass
class GnnConfig:
    """Model and training settings; stored in every checkpoint (self-describing)."""

    enabled: bool = False  # run the GNN stage in `pymk build`
    kind: str = "sage"  # sage | gcn | gat
    dim: int = 64  # 64 | 128 | 256 | 512; 64 measured better than 128 for recall@1000 (docs/RESULTS.md)
    layers: int = 2
    dropout: float = 0.3  # on the input features while training (measured: +3 points recall@1000 on lastfm)
    communities: int = 0  # > 0: a learned embedding of each user's METIS community (this many parts)
    features: str = ""  # optional user feature file (CSV or Parquet): a user_id column + numeric columns
    skip: bool = False  # final embedding = last layer + input features: sharper top-20, lower recall@1000
    fanouts: tuple[int, ...] = (10, 10)
    batch: int = 256  # seed nodes per mini-batch (positive endpoints + negatives)
    negatives: int = 4  # per positive; hard_negatives of them are 2-hop non-friends, the rest uniform
    hard_negatives: int = 0
    epochs: int = 30
    lr: float = 0.005
    patience: int = 8  # epochs without validation improvement before stopping
    val_k: int = 500  # early stopping watches validation recall@val_k: Stage 1 retrieves ~1,000
    val_fraction: float = 0.05
    loss: str = "bpr"  # bpr (pairwise, measured better for retrieval) | bce
    seed: int = 0
    max_steps_per_epoch: int = 600  # bounds an epoch on large graphs (0 = one full pass over the edges)
    device: str = "auto"  # auto (a GPU where torch sees one, else cpu) | cpu | cuda | cuda:N
    workers: int = 1  # the build's data-parallel workers (each takes `batch` seed nodes of a global batch):
    #                   torch.distributed processes here, Ray Train workers with `--executor ray`
    strategy: str = "data_parallel"  # data_parallel | partition (the brief's partition-and-train: `partitions`
    #                   graph partitions trained apart, one round an epoch, boundary embeddings exchanged
    #                   through a shared store between rounds; pymk/gnn/partitioned.py)
    partitions: int = 4

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fanouts"] = list(self.fanouts)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GnnConfig:
        d = dict(d)
        d["fanouts"] = tuple(d.get("fanouts", (10, 10)))
        return cls(**d)

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"gnn.kind must be one of {KINDS}, got {self.kind!r}")
        if self.layers != len(self.fanouts):
            raise ValueError(f"gnn.layers ({self.layers}) must equal len(gnn.fanouts) ({len(self.fanouts)})")
        if not 0 <= self.hard_negatives <= self.negatives:
            raise ValueError("gnn.hard_negatives must be between 0 and gnn.negatives")
        if self.dim % 4 or self.dim < 8:
            raise ValueError(f"gnn.dim must be a multiple of 4 and >= 8, got {self.dim}")
        if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", self.device.strip().lower()):
            raise ValueError(f"gnn.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.workers < 1:
            raise ValueError(f"gnn.workers must be >= 1, got {self.workers}")
        if self.strategy not in ("data_parallel", "partition"):
            raise ValueError(f"gnn.strategy must be data_parallel or partition, got {self.strategy!r}")
        if self.strategy == "partition" and self.partitions < 2:
            raise ValueError(f"gnn.partitions must be >= 2 with gnn.strategy = partition, got {self.partitions}")
        if self.strategy == "partition" and self.communities:
            raise ValueError("gnn.strategy = partition does not take gnn.communities (a partition is one)")
        if self.loss not in ("bce", "bpr"):
            raise ValueError(f"gnn.loss must be bce or bpr, got {self.loss!r}")
