"""In-process daemons with a Cortex each, on 127.0.0.1, for sync over real libp2p.

Sovereignty stays on unless a test asks for `share_all=True`: then the allow-all policy
is passed to the in-process daemon's constructor (`run_daemon(share_policy=...)`). No
config key can do that (issue 11, item 12): the real binary always enforces agreements.
"""

from __future__ import annotations

import pytest
import trio
from daemon_cluster import DaemonCluster, quiet_libp2p

from gd.node.daemon import Daemon
from gd.node.services.sync_service import share_all as allow_all

# [sync] settings: automatic sync with a short debounce, or only `sync now`.
SHARE_ALL = {"debounce_s": 0.05}
MANUAL = {"auto": False}


@pytest.fixture(autouse=True)
def _quiet_libp2p():
    quiet_libp2p()


class Cluster(DaemonCluster):
    """Daemons that sync (an allow-all policy injected in-process where asked)."""

    async def start(self, nursery: trio.Nursery, n: int, *, sync: dict | None = None,
                    boot: list[Daemon] = (), share_all: bool = False) -> Daemon:
        return await self.start_daemon(nursery, n, sync=sync, boot=boot,
                                       share_policy=allow_all if share_all else None)

    async def manual_pair(self, nursery: trio.Nursery) -> tuple[Daemon, Daemon]:
        """Nodes 1 and 2, sharing everything, syncing only when a test says (no timers
        race its assertions), connected: the setup most sync tests start from."""
        a = await self.start(nursery, 1, sync=MANUAL, share_all=True)
        b = await self.start(nursery, 2, sync=MANUAL, share_all=True, boot=[a])
        await self.connected(a, b)
        return a, b

    # Helpers live here because tests import modules by path (no `from conftest`).
    SHARE_ALL = SHARE_ALL
    MANUAL = MANUAL

    @staticmethod
    def contents(d: Daemon) -> dict[str, bytes]:
        return {g.id: g.version_hash for g in d.cortex.genes()}


@pytest.fixture
def cluster():
    with Cluster.in_tmp("gds") as c:
        yield c


