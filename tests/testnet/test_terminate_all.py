"""`terminate_all`: SIGTERM first, SIGKILL for a process that outlives the wait, and
every process reaped."""

from __future__ import annotations

import signal
import subprocess
import sys

from gd.testnet.procs import terminate_all

SLEEPER = "import time; print('up', flush=True); time.sleep(60)"
STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('up', flush=True); time.sleep(60)")


def spawn(code: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"  # handler set
    proc.stdout.close()
    return proc


def test_terminate_all_terms_the_polite_and_kills_the_stubborn() -> None:
    procs = [spawn(SLEEPER), spawn(STUBBORN)]
    try:
        terminate_all(procs, timeout_s=1.0)
        assert [p.returncode for p in procs] == [-signal.SIGTERM, -signal.SIGKILL]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
