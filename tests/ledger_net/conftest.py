"""In-process daemons with a Cortex each on 127.0.0.1, as members of one ledger region."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import trio
from daemon_cluster import DaemonCluster, quiet_libp2p
from gd_testkit import key_from_int

from gd.node.daemon import Daemon


@pytest.fixture(autouse=True)
def _quiet_libp2p():
    quiet_libp2p()


def voter_ids(*ns: int) -> tuple[str, ...]:
    return tuple(key_from_int(n).peer_id for n in ns)


class Region(DaemonCluster):
    """Starts daemons in the caller's nursery; closes their Cortexes at the end."""

    voter_ids = staticmethod(voter_ids)

    wait_timeout_s = 30.0

    async def start(self, nursery: trio.Nursery, n: int, voters: Sequence[str], *,
                    boot: Sequence[Daemon] = (),
                    on_ready: Callable[[Daemon], None] | None = None) -> Daemon:
        return await self.start_daemon(nursery, n, voters=voters, sync={"auto": False},
                                       boot=boot, on_ready=on_ready)

    async def start_region(self, nursery: trio.Nursery, voters: Sequence[int] = (1, 2, 3), *,
                           learners: Sequence[int] = (),
                           on_ready: Callable[[Daemon], None] | None = None
                           ) -> tuple[list[Daemon], Daemon]:
        """Daemons `voters` then `learners`, each booting from those started before it,
        connected to each other; and the voters' leader once they have elected one."""
        ids = self.voter_ids(*voters)
        ds: list[Daemon] = []
        for n in (*voters, *learners):
            ds.append(await self.start(nursery, n, ids, boot=ds, on_ready=on_ready))
        await self.connected(*ds)
        return ds, await self.leader(ds[:len(voters)])

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
    with Region.in_tmp("gdl") as r:
        yield r
