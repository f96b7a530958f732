"""Real-driver counterparts of what `fedsim` found and checks (issue 12 item 6): the
sync and sovereignty services run on trio's mock clock over the simulated gate of
`service_sim_sov`, so these tests fail when the *drivers* (not a re-statement of
them) regress.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import service_sim_sov
import trio

from gd.genome.gene import Gene
from gd.node.config_sections import SyncSettings
from gd.node.net.streams import READ_TIMEOUT_S
from gd.node.store.cortex import Cortex

DOMAIN = service_sim_sov.DOMAINS[0]


class RevokingReceiver(service_sim_sov.CheckedReceiver):
    """Node 1's receiver view that, right after it accepts the first gene of a pull,
    has its organisation revoke its agreement with the sender (a person acting while
    the pull's group of batches is still being staged)."""

    def __init__(self, view: Any, check: Callable[[Gene, float], None],
                 net: MidPullRevokeNet) -> None:
        super().__init__(view, check)
        self.net = net

    def accept(self, gene: Gene) -> bool:
        ok = super().accept(gene)
        if ok and not self.net.revoked:
            self.net.revoked = True
            self.net.revoke(self.net.nodes[1], (1, 0, DOMAIN))
        return ok


class MidPullRevokeNet(service_sim_sov.SovNet):
    """No faults: node 0 shares four genes with node 1, which pulls them one batch at a
    time in one group commit and revokes after the first."""

    def __init__(self, seed: int, root: Path) -> None:
        super().__init__(seed, root)
        self.revoked = False
        self.receiver_class = (  # type: ignore[assignment]
            lambda view, check: RevokingReceiver(view, check, self))

    async def main(self) -> None:
        self.faults = False
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            for node in self.nodes:
                self.open(node)
                assert node.sync is not None
                node.sync.settings = SyncSettings(auto=False, compress=False, batch_genes=1)
            a, b = self.nodes[0], self.nodes[1]
            self.share(a, (0, 1, DOMAIN))
            self.share(b, (1, 0, DOMAIN))
            self.meet(a, b)
            await trio.sleep(READ_TIMEOUT_S)  # the agreements are delivered both ways
            for _ in range(4):
                self.write(a, DOMAIN)
            await self.round(b, a, reconcile=False)
            self.check_statuses()  # a gene accepted against the model failed the round
            nursery.cancel_scope.cancel()


def test_each_pulled_batch_is_judged_on_the_policy_it_arrives_under(tmp_path: Path) -> None:
    """fedsim seed 6, on the real `FeedPuller`: a group commit stages several batches
    and the sovereign receiver view snapshots its policy; without `begin_batch()` per
    batch the later batches were judged on the first one's snapshot, so genes arrived
    after the receiver's own revoke."""
    net = MidPullRevokeNet(0, tmp_path)
    service_sim_sov.run(0, tmp_path, lambda seed, root: net)
    assert net.revoked
    b = net.nodes[1]  # run() closed its Cortex: reopen it to read what was committed
    cortex = Cortex.open(b.path)
    try:
        held = [g for g in cortex.genes() if g.origin == net.nodes[0].peer]
    finally:
        cortex.close()
    assert len(held) == 1, [g.id for g in held]
