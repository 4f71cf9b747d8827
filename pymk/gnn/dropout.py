"""Input dropout whose mask is cheap to draw on a CPU.

`torch.nn.functional.dropout` on a CPU draws one Bernoulli variate per element from a sequential
generator: ~11 ms of a ~35 ms training step for a 25K x 64 batch (a third of the step). Here the
numba stream of `pymk.gnn.rng` (xorshift64*) gives four 16-bit uniforms per draw (keep probability
quantised to 1/65536) and writes the scaled mask directly; the product with it backpropagates like
dropout. On a GPU torch's own
dropout is fast and is used as is. The stream is seeded from torch's generator, so `torch.manual_seed`
makes runs repeatable.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from pymk.gnn.rng import mix64, next_u64


@njit(cache=True)
def _mask(n: int, keep16: int, scale: float, seed: int) -> np.ndarray:
    out = np.empty(n, np.float32)
    state = np.empty(1, np.uint64)
    state[0] = mix64(np.uint64(seed))
    k = np.uint64(keep16)
    s = np.float32(scale)
    m16 = np.uint64(0xFFFF)
    for b in range((n + 3) // 4):  # one draw: four 16-bit uniforms
        r = next_u64(state)
        i = 4 * b
        if i + 4 <= n:
            out[i] = s * np.float32((r & m16) < k)
            out[i + 1] = s * np.float32(((r >> np.uint64(16)) & m16) < k)
            out[i + 2] = s * np.float32(((r >> np.uint64(32)) & m16) < k)
            out[i + 3] = s * np.float32((r >> np.uint64(48)) < k)
        else:
            for j in range(n - i):
                out[i + j] = s * np.float32(((r >> np.uint64(16 * j)) & m16) < k)
    return out


def dropout_mask(shape, p: float, seed: int) -> np.ndarray:
    """A dropout mask: each element 1 / (1 - p) with probability 1 - p, else 0. Shapes: -> shape float32."""
    keep16 = int(round((1.0 - p) * 65536))
    return _mask(int(np.prod(shape)), keep16, 65536.0 / keep16 if keep16 else 0.0, seed).reshape(shape)


def input_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout of x's elements while training (identity otherwise). Shapes: x (N, d) -> (N, d)."""
    if not training or p <= 0:
        return x
    if x.is_cuda:
        return torch.nn.functional.dropout(x, p, True)
    seed = int(torch.randint(0, 2**62, (1,)))
    return x * torch.from_numpy(dropout_mask(tuple(x.shape), p, seed))
