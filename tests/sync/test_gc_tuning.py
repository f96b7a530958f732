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
