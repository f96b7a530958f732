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


def test_the_sender_and_the_repair_paths_run_with_the_collector_held_back(monkeypatch):
    """The feed's sender (`answer_batch`), the repair responder's answer and the repair
    fetch's check each run inside `batch_gc` (issue 15), like the feed's receiver."""
    import gc

    from gd.node.gc_tuning import BATCH_GEN0_THRESHOLD
    from gd.node.services import repair_fetch, sync_serve

    seen: list[int] = []

    def recording(*args, **kwargs):
        seen.append(gc.get_threshold()[0])
        return "answer"

    monkeypatch.setattr(sync_serve, "answer_pull", recording)
    monkeypatch.setattr(repair_fetch, "check_versions", recording)
    saved = gc.get_threshold()
    gc.set_threshold(700, *saved[1:])
    try:
        assert sync_serve.answer_batch(None, None, lambda: 0, False) == "answer"
        assert repair_fetch._check(None, [], None) == "answer"
        assert gc.get_threshold()[0] == 700  # restored on the way out
    finally:
        gc.set_threshold(*saved)
    assert seen == [BATCH_GEN0_THRESHOLD, BATCH_GEN0_THRESHOLD]
