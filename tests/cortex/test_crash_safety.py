"""Crash safety: SIGKILL in the middle of batched writes leaves every acknowledged batch,
and any batch in flight either whole or not at all, with indexes consistent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gd.node.cortex import Cortex

BATCH = 2_000
BATCHES = 10
WRITER = r"""
import sys
from gd.genome import Codon, Gene, NodeKey
from gd.node.cortex import Cortex
key = NodeKey.from_seed(bytes(31) + b"\x01")
cortex = Cortex.open(sys.argv[1])
size, count = int(sys.argv[2]), int(sys.argv[3])
genes = [Gene.create(key, domain="turbofan", name=f"g{i}",
                     codons=[Codon.simple("s11", ">", 47.0)], action="inspect")
         for i in range(size * count)]
print("ready", flush=True)
for b in range(count):
    cortex.put_genes(genes[b * size:(b + 1) * size])
    print("acked", b, flush=True)
"""


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.45, 0.8])
def test_sigkill_mid_batch_keeps_acknowledged_batches_and_no_partial_one(
        tmp_path: Path, delay: float) -> None:
    path = tmp_path / "cortex"
    Cortex.open(path).close()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(BATCH), str(BATCHES)],
                            stdout=subprocess.PIPE, text=True)
    acked: list[int] = []

    def read_acks() -> None:
        for line in proc.stdout:
            if line.startswith("acked"):
                acked.append(int(line.split()[1]))

    try:
        assert proc.stdout.readline().strip() == "ready"
        reader = threading.Thread(target=read_acks, daemon=True)
        reader.start()
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    reader.join(timeout=10)
    proc.stdout.close()
    with Cortex.open(path) as cortex:
        stored = cortex.stats().genes
        assert stored % BATCH == 0, f"partial batch: {stored} genes"
        assert stored >= len(acked) * BATCH, "an acknowledged batch was lost"
        assert cortex.check_indexes() == []
        assert cortex.stats().changes == stored
