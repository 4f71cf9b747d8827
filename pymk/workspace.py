"""Per-thread scratch arrays that the graph kernels reuse from one call to the next.

Serving asks for one user at a time: allocating or re-zeroing O(n) arrays per request would cost more
than the traversal itself on a large graph. So each kernel takes its scratch from here and leaves it
clean (zeroed, or stamped) when it returns; a thread gets its own, so parallel callers never share one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_local = threading.local()


def thread_scratch(key: str, n: int, make: Callable[[int], T]) -> T:
    """This thread's scratch for `key`, built by `make(n)` on first use or when `n` (the number of
    users it is sized for) changes, and the same object on every later call."""
    held = _local.__dict__.get(key)
    if held is None or held[0] != n:
        held = (n, make(n))
        _local.__dict__[key] = held
    return held[1]
