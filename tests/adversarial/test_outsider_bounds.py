"""Issue 11, item 6: what an outsider can make a node store or serve is bounded.

* share proposals: any handshaken peer could store unlimited rows (21,764 in 26 s); now
  at most MAX_RULES_PER_PEER per peer (and MAX_RULES_TOTAL in all), the peer is dropped
  and banned past it, and rows from peers that never reached an agreement expire;
* the region's ledger (`LedgerFetch`) is served only to certified members of the region
  (node/net/membership.py), never to a peer of another region nor to a bare claim of ours;
* learner slots are capped (MAX_LEARNERS; lowered here to keep the test small) instead
  of every same-region key becoming a permanent learner.
"""

from __future__ import annotations

import contextlib
import time

import pytest
import trio
from daemon_cluster import DaemonCluster, certificate_for
from gd_testkit import key_from_int
from hostile import HostilePeer, hostile_peer

from gd.node.services import ledger_inbound
from gd.node.services.ledger_wire import RAFT_PROTOCOL_ID, LedgerChunk, LedgerFetch, LedgerGossip
from gd.node.services.sovereignty_service import AGREEMENTS_PROTOCOL_ID
from gd.node.store.policy_store import rule_from_options
from gd.node.store.proposal_bounds import MAX_RULES_PER_PEER, UNAGREED_TTL_MS
from gd.protocol.agreement_messages import (
    MAX_PROPOSALS_PER_FRAME,
    DeliveryAck,
    ProposalDelivery,
)
from gd.protocol.handshake import Accepted
from gd.protocol.sovereignty_agreements import Proposal, ProposalKind

NOW_MS = int(time.time() * 1000)
LATER_MS = 600_000  # the test's own run time, well covered


def certified(peer: HostilePeer, region: str) -> dict:
    """Handshake claims backed by a certificate from an org key the node pins."""
    return {"org": "test-org", "region": region,
            "extra": {"certificate": certificate_for("test-org", region, peer.peer_id)}}


def shares(evil: HostilePeer, target: str, first: int, n: int) -> tuple[bytes, ...]:
    """`n` signed shares with distinct rules (one domain each) addressed to `target`."""
    return tuple(Proposal.create(evil.key, ProposalKind.SHARE, target,
                                 rule_from_options(target, f"spam{i}"), hlc=NOW_MS).encode()
                 for i in range(first, first + n))


async def test_share_proposals_are_bounded_per_peer_and_expire():
    with DaemonCluster.in_tmp("gd-adv-") as fed:
        async with trio.open_nursery() as nursery:
            node = await fed.start_daemon(nursery, 1, region="eu")
            store = node.sovereignty.store
            async with hostile_peer() as evil:
                assert isinstance(await evil.handshake(node, region="eu"), Accepted)
                fs = await evil.open(node, AGREEMENTS_PROTOCOL_ID)
                sent = 0
                with contextlib.suppress(Exception):  # the node resets us past the bound
                    for batch in range(2 * MAX_RULES_PER_PEER // MAX_PROPOSALS_PER_FRAME + 1):
                        ack = await fs.request(ProposalDelivery(
                            proposals=shares(evil, node.peer_id, sent, MAX_PROPOSALS_PER_FRAME),
                            upto=batch + 1))
                        assert isinstance(ack, DeliveryAck) and ack.refused == 0
                        sent += MAX_PROPOSALS_PER_FRAME
                held = len(store.remote_rules().get(evil.peer_id, ()))
                assert sent == MAX_RULES_PER_PEER and held == MAX_RULES_PER_PEER
                # Past the bound: dropped and banned, not served slowly.
                await fed.until(lambda: not evil.connected_to(node))
                assert node.planner.is_banned(evil.peer_id, time.monotonic())
                # No agreement ever flowed: after the TTL every row of it is forgotten.
                assert store.expire_unagreed(NOW_MS + UNAGREED_TTL_MS // 2) == 0
                assert store.expire_unagreed(NOW_MS + UNAGREED_TTL_MS + LATER_MS) == 1
                assert evil.peer_id not in store.remote_rules()
                assert not [a for a in store.agreements() if a.peer == evil.peer_id]
            node.stop()


async def test_the_ledger_is_served_only_to_members_of_the_region():
    with DaemonCluster.in_tmp("gd-adv-") as fed:
        async with trio.open_nursery() as nursery:
            me = key_from_int(1).peer_id
            node = await fed.start_daemon(nursery, 1, region="eu", voters=[me])
            await node.ledger.append("decision", b"\x01" * 32, {"n": 1}, "k-1")
            async with hostile_peer() as member, hostile_peer() as outsider, \
                    hostile_peer() as claimer:
                assert isinstance(await member.handshake(node, **certified(member, "eu")),
                                  Accepted)
                fs = await member.open(node, RAFT_PROTOCOL_ID)
                chunk = await fs.request(LedgerFetch(start=0, stop=10))
                assert isinstance(chunk, LedgerChunk) and len(chunk.entries) >= 1
                await fs.close()
                dropped = node.ledger.m_dropped.labels(reason="not_member")
                # Certified, but for another region; then a bare claim of our region.
                for peer, claim in ((outsider, certified(outsider, "us")),
                                    (claimer, {"org": "test-org", "region": "eu"})):
                    before = dropped._value.get()
                    assert isinstance(await peer.handshake(node, **claim), Accepted)
                    fs = await peer.open(node, RAFT_PROTOCOL_ID, read_timeout_s=5)
                    with pytest.raises(Exception) as refused:
                        await fs.request(LedgerFetch(start=0, stop=10))
                    assert not isinstance(refused.value, AssertionError)
                    assert dropped._value.get() == before + 1
            node.stop()


async def test_learner_slots_are_capped(monkeypatch):
    monkeypatch.setattr(ledger_inbound, "MAX_LEARNERS", 2)
    with DaemonCluster.in_tmp("gd-adv-") as fed:
        async with trio.open_nursery() as nursery:
            me = key_from_int(1).peer_id
            node = await fed.start_daemon(nursery, 1, region="eu", voters=[me])
            await fed.until(lambda: node.ledger.node.is_leader)
            async with contextlib.AsyncExitStack() as stack:
                evil = [await stack.enter_async_context(hostile_peer()) for _ in range(4)]
                for peer in evil:
                    assert isinstance(await peer.handshake(node, **certified(peer, "eu")),
                                      Accepted)
                for _ in range(3):  # gossip asks for a learner slot, again and again
                    for peer in evil:
                        fs = await peer.open(node, RAFT_PROTOCOL_ID)
                        await fs.send(LedgerGossip(head=b"", voters=(me,)))
                        await fs.close()
                    await trio.sleep(0.5)
                await fed.until(lambda: len(node.ledger.node.conf.learners) == 2)
                await trio.sleep(1.0)  # and no more arrive later
                assert len(node.ledger.node.conf.learners) == 2
                refused = node.ledger.m_dropped.labels(reason="learners_full")
                assert refused._value.get() >= 1
            node.stop()
