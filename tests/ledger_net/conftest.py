"""In-process daemons with a Cortex each on 127.0.0.1, as members of one ledger region."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import trio
from gd_testkit import key_from_int

from gd.node.config import NodeConfig
from gd.node.cortex import Cortex
from gd.node.daemon import Daemon, run_daemon
from gd.node.discovery import BootstrapPeer, render_bootstrap
from gd.node.home import Home
from gd.node.host import dialable_addrs

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
FAST_MESH = {"backoff_base_s": 0.2, "backoff_max_s": 1.0, "ping_interval_s": 5}


@pytest.fixture(autouse=True)
def quiet_libp2p():
    for name in ("libp2p", "multiaddr", "async_service"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def voter_ids(*ns: int) -> tuple[str, ...]:
    return tuple(key_from_int(n).peer_id for n in ns)


class Region:
    """Starts daemons in the caller's nursery; closes their Cortexes at the end."""

    voter_ids = staticmethod(voter_ids)

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cortexes: dict[int, Cortex] = {}

    def home(self, n: int) -> Home:
        home = Home(self.root / f"n{n}")
        home.root.mkdir(exist_ok=True)
        return home

    def cortex(self, n: int) -> Cortex:
        if n not in self.cortexes:
            self.cortexes[n] = Cortex.open(self.home(n).cortex_path)
        return self.cortexes[n]

    async def start(self, nursery: trio.Nursery, n: int, voters: Sequence[str], *,
                    boot: Sequence[Daemon] = (),
                    on_ready: Callable[[Daemon], None] | None = None) -> Daemon:
        home = self.home(n)
        cfg = NodeConfig(org=f"org{n}", region="eu", ledger_voters=tuple(voters),
                         extra={"mesh": dict(FAST_MESH), "sync": {"auto": False}})
        bootstrap = None
        if boot:
            bootstrap = home.root / "bootstrap-peers.toml"
            bootstrap.write_text(render_bootstrap([
                BootstrapPeer(d.peer_id, tuple(dialable_addrs(d.host)), d.cfg.region)
                for d in boot]))
        ready = trio.Event()
        box: list[Daemon] = []

        def ready_cb(d: Daemon) -> None:
            if on_ready is not None:
                on_ready(d)
            box.append(d)
            ready.set()

        cortex = self.cortex(n)
        nursery.start_soon(lambda: run_daemon(home, cfg, key_from_int(n), cortex=cortex,
                                              listen=LOOPBACK, bootstrap=bootstrap,
                                              ready_callback=ready_cb, handle_signals=False))
        with trio.fail_after(10):
            await ready.wait()
        return box[0]

    def close(self) -> None:
        for cortex in self.cortexes.values():
            cortex.close()

    @staticmethod
    async def until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        with trio.fail_after(timeout):
            while not predicate():
                await trio.sleep(0.05)

    async def connected(self, *daemons: Daemon, timeout: float = 30.0) -> None:
        def all_meshed() -> bool:
            return all({o.peer_id for o in daemons if o is not d}
                       <= {r.peer_id for r in d.table.connected()} for d in daemons)

        await self.until(all_meshed, timeout)

    async def leader(self, daemons: Sequence[Daemon], timeout: float = 30.0) -> Daemon:
        box: list[Daemon] = []

        def found() -> bool:
            box[:] = [d for d in daemons if d.ledger.node.is_leader]
            return len(box) == 1

        await self.until(found, timeout)
        return box[0]

    @staticmethod
    def sizes(daemons: Sequence[Daemon]) -> list[int]:
        return [d.ledger.ledger.size for d in daemons]


@pytest.fixture
def region():
    root = Path(tempfile.mkdtemp(prefix="gdl", dir="/tmp"))  # short: Unix socket paths
    r = Region(root)
    yield r
    r.close()
    shutil.rmtree(root, ignore_errors=True)
