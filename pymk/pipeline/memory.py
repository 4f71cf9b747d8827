"""Giving freed memory back to the operating system between the build's whole-graph steps.

glibc serves allocations below its mmap threshold from heap arenas, and raises that threshold (up to 32 MB)
each time a larger block is freed; a stage that allocates and frees thousands of such blocks (Stage-1 lists,
pair features, LightGBM rows) leaves them free but resident, and the next whole-graph array comes on top.
`trim_heap` asks glibc to return the free parts of its arenas (`malloc_trim(0)`); elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return lib if lib is not None and hasattr(lib, "malloc_trim") else None


def trim_heap() -> bool:
    """Returns free heap memory to the OS; True if glibc did release some."""
    lib = _libc()
    return bool(lib.malloc_trim(0)) if lib is not None else False
