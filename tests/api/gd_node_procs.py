"""The `gd-node` binary as a subprocess, for the API tests that need a real daemon
process (kill -9 resumption, the browser console): one CLI call, one daemon start, and
the one way to stop it (SIGTERM, then SIGKILL, always reaped)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from gd.testnet.procs import terminate_all

GD_NODE = str(Path(sys.executable).with_name("gd-node"))
CLI_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30.0


def gd_node(*args: str, home: Path) -> str:
    """Run one CLI command on `home`; its stdout (the test fails on a non-zero exit)."""
    done = subprocess.run([GD_NODE, *args, "--home", str(home)], capture_output=True,
                          text=True, timeout=CLI_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    return done.stdout


def start_daemon(home: Path, log: Path) -> subprocess.Popen[bytes]:
    """`gd-node run` on `home`, its JSON log appended to `log`."""
    return subprocess.Popen([GD_NODE, "run", "--home", str(home), "--log-format", "json"],
                            stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def reap(proc: subprocess.Popen[bytes]) -> None:
    """Stop a daemon this test started (SIGTERM, SIGKILL after STOP_TIMEOUT_S), reaped."""
    terminate_all([proc], STOP_TIMEOUT_S)


async def daemon_status(home: Path, timeout_s: float = 60.0) -> dict[str, Any]:
    """`gd-node status --json`'s daemon section, once the daemon serves its API."""
    with trio.fail_after(timeout_s):
        while True:
            out = await trio.to_thread.run_sync(lambda: subprocess.run(
                [GD_NODE, "status", "--json", "--home", str(home)], capture_output=True,
                text=True, timeout=timeout_s))
            if out.returncode == 0:
                daemon: dict[str, Any] = json.loads(out.stdout)["daemon"]
                if daemon.get("api_url"):
                    return daemon
            await trio.sleep(0.2)
