"""Garbage collection out of the way of batch work (issue 15).

Decoding a sync batch or an import allocates tens of thousands of small, acyclic
objects (dicts, lists, genes); each allocation burst triggers CPython's generational
collector, and its full collections walk every object the process holds: the libp2p
stack, the loaded modules, caches. Measured on a 20,000-gene local apply, those walks
were a third of the time. `gc.freeze()` moves everything alive at start-up into a
permanent generation the collector never scans again; cycles created later are still
collected as before.

`batch_gc` goes further while a batch is worked on: it raises the young generation's
threshold so the allocation bursts of decoding and applying do not trigger collections
at all (measured with bench/sync_profile.py, ADR 0032).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

_frozen = threading.Event()


def freeze_startup_heap() -> bool:
    """Freeze the objects alive now (once per process; later calls do nothing).
    Returns whether this call froze them."""
    if _frozen.is_set():
        return False
    _frozen.set()
    gc.freeze()
    return True


# Allocations between two young-generation collections while batch work runs. The
# default (700) fires a collection every few decoded genes; the objects a batch makes
# are acyclic and die with the batch, so those collections find nothing to free.
BATCH_GEN0_THRESHOLD: Final = 100_000
_lock = threading.Lock()
_active = 0
_saved: tuple[int, int, int] = (0, 0, 0)


@contextmanager
def batch_gc(gen0: int = BATCH_GEN0_THRESHOLD) -> Iterator[None]:
    """Raise the young generation's threshold to `gen0` while a batch is decoded,
    checked or applied (any thread; nested and concurrent uses share it, and the last
    one out restores the thresholds it found). Cycles are still collected: the
    collector runs, just less often."""
    global _active, _saved
    if gen0 < 1:
        raise ValueError(f"gen0 threshold must be at least 1, got {gen0}")
    with _lock:
        if _active == 0:
            _saved = gc.get_threshold()
            gc.set_threshold(max(gen0, _saved[0]), _saved[1], _saved[2])
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                gc.set_threshold(*_saved)
