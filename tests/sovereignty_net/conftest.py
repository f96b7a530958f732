"""In-process daemons with a Cortex each, on 127.0.0.1, enforcing sovereignty (no
share-all test switch): what moves between them is what their agreements allow."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from gd_testkit import key_from_int

from gd.node.audit import AuditKind
from gd.node.config import NodeConfig
from gd.node.cortex import Cortex
from gd.node.daemon import Daemon, run_daemon
from gd.node.discovery import BootstrapPeer, render_bootstrap
from gd.node.home import Home
from gd.node.host import dialable_addrs
from gd.node.policy_store import rule_from_options

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
FAST_MESH = {"backoff_base_s": 0.2, "backoff_max_s": 1.0, "ping_interval_s": 5}
# Automatic sync with a short debounce: genes follow agreements without `sync now`.
FAST_SYNC = {"debounce_s": 0.05}


@pytest.fixture(autouse=True)
def quiet_libp2p():
    for name in ("libp2p", "multiaddr", "async_service"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


class Federation:
    """Starts daemons in the caller's nursery; closes their Cortexes at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cortexes: list[Cortex] = []

    async def start(self, nursery: trio.Nursery, n: int, *, boot: list[Daemon] = (),
                    region: str = "eu") -> Daemon:
        home = Home(self.root / f"n{n}")
        home.root.mkdir(exist_ok=True)
        cortex = Cortex.open(home.cortex_path)
        self.cortexes.append(cortex)
        cfg = NodeConfig(org=f"org{n}", region=region,
                         extra={"mesh": dict(FAST_MESH), "sync": dict(FAST_SYNC)})
        bootstrap = None
        if boot:
            bootstrap = home.root / "bootstrap-peers.toml"
            bootstrap.write_text(render_bootstrap([
                BootstrapPeer(d.peer_id, tuple(dialable_addrs(d.host)), d.cfg.region)
                for d in boot]))
        ready = trio.Event()
        box: list[Daemon] = []

        def on_ready(d: Daemon) -> None:
            box.append(d)
            ready.set()

        nursery.start_soon(lambda: run_daemon(home, cfg, key_from_int(n), cortex=cortex,
                                              listen=LOOPBACK, bootstrap=bootstrap,
                                              ready_callback=on_ready, handle_signals=False))
        with trio.fail_after(10):
            await ready.wait()
        return box[0]

    def close(self) -> None:
        for cortex in self.cortexes:
            cortex.close()

    @staticmethod
    async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        with trio.fail_after(timeout):
            while not predicate():
                await trio.sleep(0.05)

    async def connected(self, *daemons: Daemon, timeout: float = 20.0) -> None:
        def all_meshed() -> bool:
            return all({o.peer_id for o in daemons if o is not d}
                       <= {r.peer_id for r in d.table.connected()} for d in daemons)

        await self.until(all_meshed, timeout)

    @staticmethod
    async def share(d: Daemon, other: Daemon, domain: str, **options: bool) -> None:
        """What `gd-node share --with OTHER --domain D` does beside a running daemon (in a
        worker thread: the daemon's ledger route is called from threads)."""
        sov = d.sovereignty
        rule = rule_from_options(other.peer_id, domain, **options)
        await trio.to_thread.run_sync(lambda: sov.store.share(rule, ledger=sov.ledger))
        sov.policy_changed()

    @staticmethod
    def from_peer(d: Daemon, origin: Daemon, domain: str | None = None) -> dict[str, object]:
        """Genes `d` holds whose origin is `origin`: id -> gene."""
        return {g.id: g for g in d.cortex.genes(origin=origin.peer_id, domain=domain)}

    @staticmethod
    def audited(d: Daemon, kind: str, peer: Daemon) -> set[str]:
        """Gene ids in `d`'s audit records of `kind` about `peer`."""
        return {r.gene_id for r in d.sovereignty.audit.records(kind=kind)
                if r.peer == peer.peer_id}

    SENT = AuditKind.GENE_SENT
    RECEIVED = AuditKind.GENE_RECEIVED

    @staticmethod
    def stop_all(*daemons: Daemon) -> None:
        for d in daemons:
            d.stop()


@pytest.fixture
def fed():
    root = Path(tempfile.mkdtemp(prefix="gdv", dir="/tmp"))  # short: Unix socket paths
    f = Federation(root)
    yield f
    f.close()
    shutil.rmtree(root, ignore_errors=True)
