"""Giving freed memory back to the operating system between the build's whole-graph steps, and keeping a
long-running service's garbage collections short.

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


class HeapTrimmer:
    """A daemon thread that calls `trim_heap` every `interval_s` seconds, for a long-running process whose
    request threads allocate and free large temporary arrays (the service: without it a 1M-user service's
    RSS grew 1,233 -> 1,735 MB over a 10-minute soak, of which one `malloc_trim` gave back ~700 MB)."""

    def __init__(self, interval_s: float):
        import threading

        self.interval_s = interval_s
        self.runs = 0
        self.ran = threading.Event()  # set after each trim (tests wait on it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pymk-heap-trim", daemon=True)

    def start(self) -> HeapTrimmer:
        if self.interval_s > 0 and _libc() is not None:
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            trim_heap()
            self.runs += 1
            self.ran.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def freeze_heap() -> int:
    """Collects, then moves every object alive now out of the collector's generations (`gc.freeze`): a service
    calls it once it has started, so a full collection later scans only what requests made since, not the
    model's and the libraries' objects. Measured on a 20K-user service with LightGBM (docs/BENCHMARKS.md): a
    full collection 133 ms before, 0.5 ms after, and Python runs one whenever enough objects survive, in the
    middle of a request. Returns the objects frozen."""
    import gc

    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def refreeze_heap() -> int:
    """After a swap closed the old version: gives its frozen objects back to the collector (the reference
    cycles it sits in are freed only by a collection), collects them, and freezes what lives on."""
    import gc

    gc.unfreeze()
    return freeze_heap()
