"""In-process daemons with a Cortex each, on 127.0.0.1, for sync over real libp2p."""

from __future__ import annotations

import pytest
import trio
from daemon_cluster import DaemonCluster, quiet_libp2p

from gd.node.daemon import Daemon

SHARE_ALL = {"share_all_for_tests": True, "debounce_s": 0.05}
MANUAL = {"share_all_for_tests": True, "auto": False}


@pytest.fixture(autouse=True)
def _quiet_libp2p():
    quiet_libp2p()


class Cluster(DaemonCluster):
    """Daemons that sync (share-all test switch where asked)."""

    async def start(self, nursery: trio.Nursery, n: int, *, sync: dict | None = None,
                    boot: list[Daemon] = ()) -> Daemon:
        return await self.start_daemon(nursery, n, sync=sync, boot=boot)

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


