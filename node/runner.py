"""The foreground node process: load the home, open the Cortex, run the daemon.

Owns the order of start and shutdown around `gd.node.daemon.run_daemon` (which holds
the pid lock, the libp2p host and the control socket): the Cortex is opened before the
network starts and closed only after the daemon has stopped, so no write is cut short.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from gd.node.home import Home
from gd.node.local import load_identity
from gd.node.lock import AlreadyRunning, holder_pid
from gd.node.logging import configure_logging, get_logger
from gd.node.store.cortex import Cortex
from gd.node.store.cortex_owner import claim_if_unstamped


def run_foreground(home: Home, *, log_format: str | None = None,
                   listen: list[str] | None = None, bootstrap: Path | None = None,
                   log_level: str = "info",
                   ready: Callable[[Any], None] | None = None) -> int:
    """Run until SIGINT/SIGTERM; returns the exit code (0 on a clean stop)."""
    from gd.node.daemon import run_daemon  # libp2p import (~1.5 s) only when running
    from gd.node.net.host import dialable_addrs

    configure_logging(log_format or ("console" if sys.stderr.isatty() else "json"), log_level)
    cfg, key = load_identity(home)
    pid = holder_pid(home.pid_path)
    if pid is not None:  # say so before opening anything (no stray "closed" lines)
        raise AlreadyRunning(f"a gd-node daemon (pid {pid if pid > 0 else '?'}) already "
                             f"runs on {home.root}; stop it first")

    def announce(daemon: Any) -> None:
        print(f"peer id: {key.peer_id}", file=sys.stderr, flush=True)
        for addr in dialable_addrs(daemon.host):
            print(f"listening: {addr}", file=sys.stderr, flush=True)
        if ready is not None:
            ready(daemon)

    cortex = Cortex.open(home.cortex_path, map_size=cfg.cortex_map_size_mb << 20,
                         create=False)
    try:
        claim_if_unstamped(cortex, key.peer_id)  # homes made before the owner stamp
        trio.run(functools.partial(run_daemon, home, cfg, key, cortex=cortex, listen=listen,
                                   bootstrap=bootstrap, ready_callback=announce))
    finally:
        cortex.close()
        get_logger("gd.node").info("node.closed", home=str(home.root))
    return 0
