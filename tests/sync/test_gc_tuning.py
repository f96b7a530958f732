"""The start-up heap is frozen once per process (gd.node.gc_tuning), so collections
during batch work stop walking it."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc
from gd.node.gc_tuning import freeze_startup_heap
before = gc.get_freeze_count()
first = freeze_startup_heap()
after = gc.get_freeze_count()
second = freeze_startup_heap()
print(before, first, after > before, second)
"""


def test_freezes_the_heap_once_per_process():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["0", "True", "True", "False"]


def test_batch_gc_raises_gen0_while_active_and_the_last_one_out_restores():
    import gc
    import threading

    from gd.node.gc_tuning import batch_gc

    before = gc.get_threshold()
    inside: list[tuple[int, int, int]] = []
    gate = threading.Barrier(2, timeout=10)

    def worker() -> None:
        with batch_gc(50_000):
            gate.wait()  # both inside at once
            gate.wait()  # the main thread left first
            inside.append(gc.get_threshold())

    t = threading.Thread(target=worker)
    t.start()
    with batch_gc(50_000):
        gate.wait()
        assert gc.get_threshold() == (50_000, *before[1:])
    gate.wait()
    t.join(timeout=10)
    assert inside == [(50_000, *before[1:])]  # still raised for the one left inside
    assert gc.get_threshold() == before
    try:
        with batch_gc(1), batch_gc(0):
            pass
    except ValueError:
        pass
    else:
        raise AssertionError("a gen0 threshold of 0 must be refused")
    assert gc.get_threshold() == before
