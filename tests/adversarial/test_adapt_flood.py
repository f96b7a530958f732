"""A partner floods us with genes: auto-adaptation (gd.node.app.auto_adapt) queues at most
`[adaptation] max_per_peer` M_M jobs a day for the genes one peer sends, whatever it
sends, and another peer's genes are still adapted (docs/security.md).

The attacker is a hostile peer (tests/support/hostile.py) with a real turbofan agreement
with a real daemon on 127.0.0.1, serving its change feed through our own sync core."""

from __future__ import annotations

import trio
from daemon_cluster import quiet_libp2p
from gd_testkit import key_from_int, make_gene
from hostile import hostile_peer

from gd.genome.gene import GeneStatus
from gd.motors.domains import get_domain
from gd.node.app import decisions as dec
from gd.node.app.auto_adapt_settings import AdaptationSettings
from gd.node.control import call
from gd.node.store.policy_store import AgreementState, rule_from_options

K1 = key_from_int(1)
FLOOD = 40


async def agreed_with(fed, node, evil, domain: str) -> None:
    """Both halves of a `domain` agreement between `node` and the hostile peer."""
    sov = node.sovereignty
    rule = rule_from_options(evil.peer_id, domain)
    await trio.to_thread.run_sync(lambda: sov.store.share(rule, ledger=sov.ledger))
    await evil.propose(node, rule_from_options(node.peer_id, domain))
    await fed.until(lambda: sov.store.agreement(evil.peer_id, domain).state
                    is AgreementState.EFFECTIVE)


def _our_history(daemon) -> None:
    """A native turbofan gene with experiences: the domain history received genes are
    adapted on (without it nothing would be queued at all, and the test would prove
    nothing)."""
    ours = make_gene(K1, "ours", "turbofan")
    daemon.cortex.put_gene(ours)
    for s in get_domain("turbofan").demo_states(12, 3):
        dec.record_experience(daemon.api.node, ours.id, s, success=s.values["s11"] > 47.6)


def _auto_jobs(daemon, peer: str) -> list:
    return [j for j in daemon.api.jobs.list()
            if j.kind == "adapt" and j.params.get("auto", {}).get("peer") == peer]


async def test_a_gene_flood_buys_at_most_max_per_peer_adaptation_jobs(fed_adv):
    quiet_libp2p()
    fed = fed_adv
    bound = AdaptationSettings().max_per_peer
    async with trio.open_nursery() as nursery:
        node = await fed.start(nursery, 1)
        assert node.auto_adapt is not None, "auto-adaptation is on by default"
        await trio.to_thread.run_sync(_our_history, node)
        async with hostile_peer() as evil:
            await evil.handshake(node, org="partner")
            await agreed_with(fed, node, evil, "turbofan")
            flood = [make_gene(evil.key, f"flood-{i}", threshold=30.0 + i * 0.5)
                     for i in range(FLOOD)]
            feed = flood[:FLOOD // 2]
            evil.serve_feed(feed)
            await node.sync.pull(evil.peer_id)  # (sync may also pull on its own)
            await fed.until(lambda: all(node.cortex.get_gene(g.id) for g in feed))
            feed.extend(flood[FLOOD // 2:])  # a second wave, in a later round
            await node.sync.pull(evil.peer_id)
            await fed.until(lambda: all(node.cortex.get_gene(g.id) for g in flood))
            stored = [node.cortex.get_gene(g.id) for g in flood]
            assert all(g.status is GeneStatus.ADAPTATION_PENDING for g in stored)
            # every gene landed, pending: only the jobs are bounded
            jobs = await trio.to_thread.run_sync(_auto_jobs, node, evil.peer_id)
            assert len(jobs) == bound < FLOOD
            status = await trio.to_thread.run_sync(lambda: call(node.home, "status"))
            summary = status["adaptation"]  # what `gd-node status --json` shows
            assert summary["received"]["skipped_peer"] == FLOOD - bound
        # Another partner is not starved by the first one's flood.
        async with hostile_peer() as friend:
            await friend.handshake(node, org="friend")
            await agreed_with(fed, node, friend, "turbofan")
            friend.serve_feed([make_gene(friend.key, "useful", threshold=45.0)])
            await node.sync.pull(friend.peer_id)
            await fed.until(lambda: bool(_auto_jobs(node, friend.peer_id)))
            jobs = await trio.to_thread.run_sync(_auto_jobs, node, friend.peer_id)
            assert len(jobs) == 1
        fed.stop_all(node)
