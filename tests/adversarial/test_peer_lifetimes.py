"""Issue 12 item 3: a nursery (lifetime) per connection. A hostile peer whose task fails
is dropped with all of its work cancelled; an honest peer's work goes on untouched."""

from __future__ import annotations

import trio
from daemon_cluster import DaemonCluster
from hostile import hostile_peer

from gd.node.services.sync_service import share_all


async def test_a_hostile_peers_failing_task_ends_its_lifetime_and_no_one_elses():
    with DaemonCluster.in_tmp("gd-life-") as fed:
        async with trio.open_nursery() as nursery:
            node = await fed.start_daemon(nursery, 1, share_policy=share_all)
            honest = await fed.start_daemon(nursery, 2, share_policy=share_all, boot=[node])
            await fed.connected(node, honest)
            async with hostile_peer() as evil:
                await evil.handshake(node, org="throwaway", region="eu")
                await fed.until(lambda: node.gate.lifetimes.live(evil.peer_id))
                running: set[str] = set()
                cancelled: list[str] = []

                async def long_work(name: str) -> None:
                    running.add(name)
                    try:
                        await trio.sleep_forever()
                    finally:
                        running.discard(name)
                        cancelled.append(name)

                async def crash() -> None:
                    raise ValueError("our handler choked on the hostile peer's input")

                assert node.gate.spawn(evil.peer_id, long_work, "evil-delivery")
                assert node.gate.spawn(honest.peer_id, long_work, "honest-delivery")
                await fed.until(lambda: running == {"evil-delivery", "honest-delivery"})
                failed = node.metrics.dropped.labels(reason="task-failed")
                before = failed._value.get()
                assert node.gate.spawn(evil.peer_id, crash)
                # The failure drops that peer; its lifetime ends and takes its work along.
                await fed.until(lambda: not node.gate.lifetimes.live(evil.peer_id))
                await fed.until(lambda: cancelled == ["evil-delivery"])
                assert failed._value.get() == before + 1
                assert evil.peer_id not in {r.peer_id for r in node.table.connected()}
                # The honest peer: still connected, its work and its sync loop running.
                await trio.sleep(0.5)
                assert running == {"honest-delivery"}
                assert honest.peer_id in {r.peer_id for r in node.table.connected()}
                assert node.sync.state(honest.peer_id).scope is not None
                assert node.gate.lifetimes.tasks(honest.peer_id) >= 2
                assert node.health()["ok"] and not node.stop_event.is_set()
            fed.stop_all(node, honest)
