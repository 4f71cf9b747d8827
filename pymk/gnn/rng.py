"""The seeded random streams of pymk's numba kernels (neighbour sampling, dropout masks): xorshift64*
steps from a splitmix64-mixed seed. Small, fast and repeatable: the same seed gives the same stream."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def next_u64(state):
    # xorshift64*: small, fast, good enough for sampling; state is a 1-element uint64 array
    x = state[0]
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    state[0] = x
    return x * np.uint64(2685821657736338717)


@njit(cache=True, inline="always")
def mix64(z):
    # splitmix64 finaliser; never returns 0 for the xorshift state below (0 maps to a fixed non-zero)
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return z if z != 0 else np.uint64(1)
