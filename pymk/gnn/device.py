"""Where the GNN trains and infers: `gnn.device` = auto | cpu | cuda | cuda:N.

`auto` takes a GPU where PyTorch sees one (data-parallel rank r takes GPU r mod count), else the CPU.
The neighbour sampler always runs on the CPU over the CSR; a batch's sampled subgraph and the model go
to the device.
"""

from __future__ import annotations

import torch

from pymk.gnn.config import DeviceError


def resolve_device(spec: str, rank: int = 0) -> torch.device:
    """Args: spec: `gnn.device`; rank: data-parallel rank (picks the GPU under `auto` / `cuda`)."""
    spec = spec.strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(f"gnn.device = {spec!r}, but this torch ({torch.__version__}) sees no CUDA device; "
                          "use 'auto' or 'cpu'")
    count = torch.cuda.device_count()
    index = rank % count if spec == "cuda" else int(spec.split(":", 1)[1])
    if index >= count:
        raise DeviceError(f"gnn.device = {spec!r}, but this machine has {count} CUDA device(s)")
    return torch.device("cuda", index)

