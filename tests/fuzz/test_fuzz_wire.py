"""Run the atheris fuzz target (tests/fuzz/fuzz_wire.py) for a bounded number of inputs.

Skipped when atheris is not installed (it is in the `dev` extra; the hypothesis fuzz
tests in tests/protocol cover the same decoders without it). The seed is fixed, so a
failure replays with the same command line.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("fuzz_wire.py")
RUNS = 20_000
SEED = 1
# A wall-clock bound so a hang fails the test instead of the suite (20k inputs take
# ~2 s here); per-input time is bounded too (-timeout, seconds).
LIMIT_S = 300


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                    reason="atheris is not installed")
def test_decoders_survive_coverage_guided_fuzzing(tmp_path: Path) -> None:
    # A crashing input is written under tmp_path (named in the output), not the repo.
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), f"-atheris_runs={RUNS}", f"-seed={SEED}",
         "-timeout=10", f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=LIMIT_S, check=False)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, tail
    assert f"Done {RUNS} " in tail, tail
