"""The foreground node process: lock the home, open the Cortex, serve until a signal.

This is the daemon's outer shell: it owns the pid lock and the Cortex and guarantees the
shutdown order (stop accepting work, finish writes, close LMDB, release the lock). The
network side (`gd.node.daemon`) runs inside it.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import structlog
import trio

from gd.node.home import Home
from gd.node.local import open_local
from gd.node.lock import PidLock


def configure_logging(log_format: str | None) -> structlog.stdlib.BoundLogger:
    """Structured logs on stderr: JSON for machines, console when a person watches."""
    fmt = log_format or ("console" if sys.stderr.isatty() else "json")
    renderer = (structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()) if fmt == "console"
                else structlog.processors.JSONRenderer(sort_keys=True))
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    return structlog.get_logger("gd-node")


def run_foreground(home: Home, *, log_format: str | None = None) -> int:
    """Run until SIGINT/SIGTERM; returns the process exit code (0 on a clean stop)."""
    log = configure_logging(log_format)
    started = time.monotonic()
    with PidLock(home.pid_path), open_local(home) as node:
        stats = node.cortex.stats()
        log.info("node started", peer_id=node.key.peer_id, org=node.config.org,
                 region=node.config.region, home=str(home.root), pid=os.getpid(),
                 genes=stats.genes, change_seq=stats.last_seq)
        print(f"peer id: {node.key.peer_id}", file=sys.stderr, flush=True)
        received = trio.run(_wait_for_signal)
        log.info("node stopping", signal=received,
                 uptime_s=round(time.monotonic() - started, 3))
    log.info("node stopped")
    return 0


async def _wait_for_signal() -> str:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            return signal.Signals(signum).name
    return "none"
