"""In-process daemons on 127.0.0.1 for network tests: each with its own home and Cortex,
started in the caller's trio nursery, bootstrapped from daemons already running.

The suites (`tests/sync_net`, `tests/sovereignty_net`, `tests/ledger_net`) subclass
`DaemonCluster` with their defaults and helpers.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio
from gd_testkit import key_from_int

from gd.genome.certificate import NodeCertificate, TrustAnchors
from gd.genome.identity import NodeKey
from gd.node.config import MeshSettings, NodeConfig, SyncSettings
from gd.node.credentials import CERT_FILE, save_trusted_orgs, write_certificate
from gd.node.daemon import Daemon, run_daemon
from gd.node.home import Home
from gd.node.net.bootstrap_file import BootstrapPeer, render_bootstrap
from gd.node.net.host import dialable_addrs
from gd.node.store.cortex import Cortex
from gd.protocol.sync import SharePolicy

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
# Quick redials and pings: tests restart peers and must not wait out production backoffs.
FAST_MESH = {"backoff_base_s": 0.2, "backoff_max_s": 1.0, "ping_interval_s": 5}
READY_TIMEOUT_S = 10

C = TypeVar("C", bound="DaemonCluster")


def quiet_libp2p() -> None:
    for name in ("libp2p", "multiaddr", "async_service"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def write_bootstrap(home: Home, boot: Sequence[Daemon]) -> Path | None:
    """A bootstrap-peers.toml in `home` naming the running daemons `boot` (None if none)."""
    if not boot:
        return None
    path = home.root / "bootstrap-peers.toml"
    path.write_text(render_bootstrap([
        BootstrapPeer(d.peer_id, tuple(dialable_addrs(d.host)), d.cfg.region) for d in boot]))
    return path


# Test orgs: `org1`…`org32` (the cluster's nodes) and `test-org` (certified hostile peers
# in tests/adversarial), each with a seeded key. Every cluster node pins all of them, so
# `org:`/`region:` rules and ledger membership see certified claims, as in a deployment.
TEST_ORGS = (*(f"org{i}" for i in range(1, 33)), "test-org")
CERT_VALIDITY_MS = 24 * 3600 * 1000


def org_key_for_tests(org: str) -> NodeKey:
    return NodeKey.from_seed(hashlib.sha256(f"gd-test-org/{org}".encode()).digest())


def _issue(org: str, region: str, peer_id: str) -> NodeCertificate:
    now = int(time.time() * 1000)
    return NodeCertificate.issue(org_key_for_tests(org), org, peer_id, region,
                                 not_before_ms=now - 60_000, expires_ms=now + CERT_VALIDITY_MS)


def certificate_for(org: str, region: str, peer_id: str) -> bytes:
    """A certificate of `peer_id` in `region` by the test key of `org` (encoded): what a
    certified hostile peer presents in its handshake."""
    return _issue(org, region, peer_id).encode()


def certify(home: Home, org: str, region: str, peer_id: str) -> None:
    """Write the node's certificate and the pinned test orgs into its home."""
    write_certificate(home.root / CERT_FILE, _issue(org, region, peer_id))
    save_trusted_orgs(home.root, TrustAnchors.of(
        (name, org_key_for_tests(name).public_key) for name in TEST_ORGS))


async def launch(nursery: trio.Nursery, home: Home, cfg: NodeConfig, key: Any, *,
                 cortex: Cortex | None = None, listen: list[str] | None = LOOPBACK,
                 boot: Sequence[Daemon] = (),
                 on_ready: Callable[[Daemon], None] | None = None,
                 share_policy: SharePolicy | None = None) -> Daemon:
    """Run one daemon in `nursery` (signals left to the test) and return it once ready.

    `share_policy` (e.g. `share_all`) replaces sovereignty in this in-process daemon
    only: no config key can do that, so the real binary always enforces agreements."""
    bootstrap = write_bootstrap(home, boot)
    ready = trio.Event()
    box: list[Daemon] = []

    def ready_cb(d: Daemon) -> None:
        if on_ready is not None:
            on_ready(d)
        box.append(d)
        ready.set()

    nursery.start_soon(lambda: run_daemon(home, cfg, key, cortex=cortex, listen=listen,
                                          bootstrap=bootstrap, ready_callback=ready_cb,
                                          handle_signals=False, share_policy=share_policy))
    with trio.fail_after(READY_TIMEOUT_S):
        await ready.wait()
    return box[0]


async def until(predicate: Callable[[], bool], timeout: float = 20.0,
                poll_s: float = 0.05) -> None:
    """Wait (bounded) until `predicate()` holds."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(poll_s)


class DaemonCluster:
    """Starts daemons in the caller's nursery; closes their Cortexes at the end."""

    wait_timeout_s = 20.0

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

    async def start_daemon(self, nursery: trio.Nursery, n: int, *, region: str = "eu",
                           sync: dict[str, Any] | None = None, voters: Sequence[str] = (),
                           boot: Sequence[Daemon] = (),
                           on_ready: Callable[[Daemon], None] | None = None,
                           share_policy: SharePolicy | None = None,
                           mesh: dict[str, Any] | None = None) -> Daemon:
        """Node `n` (key `key_from_int(n)`, org `org<n>`), ready to serve; `mesh`
        overrides FAST_MESH's settings."""
        cfg = NodeConfig(org=f"org{n}", region=region, ledger_voters=tuple(voters),
                         mesh=MeshSettings(**{**FAST_MESH, **(mesh or {})}),
                         sync=SyncSettings(**(sync or {})))
        certify(self.home(n), cfg.org, region, key_from_int(n).peer_id)
        return await launch(nursery, self.home(n), cfg, key_from_int(n), cortex=self.cortex(n),
                            boot=boot, on_ready=on_ready, share_policy=share_policy)

    def close(self) -> None:
        for cortex in self.cortexes.values():
            cortex.close()

    async def until(self, predicate: Callable[[], bool], timeout: float | None = None) -> None:
        await until(predicate, timeout or self.wait_timeout_s)

    async def connected(self, *daemons: Daemon, timeout: float | None = None) -> None:
        """Wait until every daemon is connected (handshaken) to every other."""

        def all_meshed() -> bool:
            return all({o.peer_id for o in daemons if o is not d}
                       <= {r.peer_id for r in d.table.connected()} for d in daemons)

        await self.until(all_meshed, timeout)

    @staticmethod
    def stop_all(*daemons: Daemon) -> None:
        for d in daemons:
            d.stop()

    @classmethod
    @contextmanager
    def in_tmp(cls: type[C], prefix: str) -> Iterator[C]:
        """A cluster in a fresh short tmp dir (Unix socket paths are limited to 108 bytes),
        removed afterwards."""
        root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        cluster = cls(root)
        try:
            yield cluster
        finally:
            cluster.close()
            shutil.rmtree(root, ignore_errors=True)
