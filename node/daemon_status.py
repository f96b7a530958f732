"""What the daemon says about itself: the `status`, `peers` and `deny` control methods
and the /healthz body.

Why apart: these only read the daemon's parts (gate, stores, services) and format them;
keeping them out of node/daemon.py leaves that module the wiring of rooms (issue 12).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import trio

from gd.node.net.host import dialable_addrs

if TYPE_CHECKING:
    from gd.node.daemon import Daemon


def register_status_methods(daemon: Daemon) -> None:
    """Add `status`, `peers` and `deny` to the daemon's control methods."""
    async def status() -> dict[str, Any]:
        return await daemon_status(daemon)

    async def peers(all: bool = False) -> list[dict[str, Any]]:
        return daemon.gate.table.rows(daemon.clock.monotonic(), connected_only=not all)

    async def deny(peers: list[str]) -> list[str]:
        """Replace the deny list (persisted) and drop denied peers now."""
        return await daemon.gate.set_deny_list(peers)

    daemon.methods.add("status", status)
    daemon.methods.add("peers", peers)
    daemon.methods.add("deny", deny)


def health(daemon: Daemon) -> dict[str, Any]:
    """The /healthz body: up (not stopping), who we are, peers connected, uptime."""
    return {"ok": not daemon.stop_event.is_set(), "peer_id": daemon.peer_id,
            "peers": len(daemon.gate.table.connected()),
            "uptime_s": round(daemon.clock.wall() - daemon.started_at, 1)}


def cortex_bytes(daemon: Daemon) -> int:
    """The Cortex file's size (0 when there is none yet)."""
    try:
        return (daemon.home.cortex_path / "data.mdb").stat().st_size
    except OSError:
        return 0


async def daemon_status(daemon: Daemon) -> dict[str, Any]:
    """The `status` control method's answer (and the gauges it refreshes)."""
    gate, sync = daemon.gate, daemon.sync
    size, root = gate.ledger_head()
    nbytes = cortex_bytes(daemon)
    daemon.metrics.cortex_bytes.set(nbytes)
    daemon.metrics.ledger_height.set(size)
    adaptation = daemon.auto_adapt
    return {
        "peer_id": daemon.peer_id, "org": daemon.cfg.org, "region": daemon.cfg.region,
        "addrs": dialable_addrs(daemon.host), "pid": os.getpid(),
        "uptime_s": round(daemon.clock.wall() - daemon.started_at, 1),
        "peers": len(gate.table.connected()), "peers_by_region": gate.table.by_region(),
        "known_peers": len(gate.table), "dht_peers": daemon.dht.get_routing_table_size(),
        "cortex_bytes": nbytes, "ledger_height": size, "ledger_root": root.hex(),
        "metrics_port": daemon.metrics_port, "api_url": daemon.api_url,
        "adaptation": (await trio.to_thread.run_sync(adaptation.summary)
                       if adaptation is not None else None),
        "methods": daemon.methods.names(),
        "sync_lag": sync.lag() if sync is not None else 0,
        "conflicts": (await trio.to_thread.run_sync(lambda: len(sync.store.conflicts()))
                      if sync is not None else 0),
    }
