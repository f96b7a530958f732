"""The region's ledger over Raft on real libp2p streams: in-process daemons on 127.0.0.1."""

from __future__ import annotations

import trio
from gd_testkit import key_from_int

from gd.genome import canonical
from gd.ledger.entry import LedgerEntry
from gd.ledger.forks import AlarmKind
from gd.ledger.ledger_frames import LedgerGossip, region_log_id
from gd.ledger.merkle import verify_consistency, verify_inclusion
from gd.ledger.sth import SignedTreeHead
from gd.node.control import call
from gd.node.net.host import to_id
from gd.node.net.streams import FramedStream
from gd.node.services.ledger_wire import RAFT_PROTOCOL_ID
from gd.node.services.recorder import DaemonRoute, LedgerRecorder, OutboxRoute


def statements(n: int, tag: str, count: int) -> list[LedgerEntry]:
    key = key_from_int(n)
    return [LedgerEntry.create(key, "decision", 1000 + i,
                               canonical.sha256(f"{tag}-{i}".encode()), {"i": i})
            for i in range(count)]


def encoded_log(d) -> list[bytes]:
    return [e.encoded for e in d.ledger.ledger.entries()]


async def test_entries_proposed_on_any_node_commit_in_one_order_on_all(region, nursery):
    voters = region.voter_ids(1, 2, 3)
    # node 4 is not a voter: it joins as a learner
    ds, leader = await region.start_region(nursery, learners=(4,))
    await region.until(lambda: key_from_int(4).peer_id in leader.ledger.node.conf.learners)
    # The learner learns the configuration when the leader's next append reaches it.
    await region.until(lambda: ds[3].ledger.node.conf.voters == frozenset(voters))

    receipts: dict[int, list] = {}

    async def propose(i: int) -> None:
        d = ds[i]
        batch = statements(i + 1, f"node{i}", 15)
        receipts[i] = await d.ledger.submit(batch, timeout_s=30)
        one = await d.ledger.append("promotion", canonical.sha256(f"one{i}".encode()),
                                    {"node": i}, timeout_s=30)
        receipts[i].append(one)

    async with trio.open_nursery() as inner:
        for i in range(4):
            inner.start_soon(propose, i)
    total = 4 * 16
    assert sorted(r.index for rs in receipts.values() for r in rs) == list(range(total))
    assert all(r.status == "appended" for rs in receipts.values() for r in rs)
    await region.until(lambda: region.sizes(ds) == [total] * 4)
    logs = [encoded_log(d) for d in ds]
    assert all(log == logs[0] for log in logs)
    for d in ds:
        report = d.ledger.ledger.verify()
        assert report.ok, report.reason
    # Heads signed by the leader reach every node by gossip and are stored there.
    await region.until(lambda: all((h := d.ledger.ledger.latest_head()) is not None
                                   and h.size == total for d in ds))
    head = ds[3].ledger.ledger.latest_head()
    assert head.signer in voters and head.log_id == region_log_id("eu")
    # A proof made on one node verifies against another node's copy.
    a, b = ds[0].ledger.ledger, ds[3].ledger.ledger
    for index in (0, 17, total - 1):
        proof = a.inclusion_proof(index, total)
        verify_inclusion(b.leaf_hash(index), index, total, proof.path, b.root(total))
    proof = b.consistency_proof(20, total)
    verify_consistency(20, total, a.root(20), a.root(total), proof.path)
    # A retry of a committed statement is answered with the original receipt.
    again = await ds[1].ledger.submit(statements(2, "node1", 1), timeout_s=30)
    assert (again[0].status, again[0].index) == ("duplicate", receipts[1][0].index)
    status = ds[2].ledger.status()
    assert status["mode"] == "raft" and status["leader"] == leader.peer_id
    # From another process's point of view: `ledger head` and the recorder use the
    # control socket (run in a thread: they block, and the daemon answers on this loop).
    home = region.home(3).root
    remote = await trio.to_thread.run_sync(lambda: call(home, "ledger_status"))
    assert remote["leader"] == leader.peer_id and remote["size"] == total
    assert remote["learners"] == [key_from_int(4).peer_id]
    recorder = LedgerRecorder(region.cortex(3).env, key_from_int(3),
                              route=DaemonRoute(home, region.cortex(3).env))
    receipt = await trio.to_thread.run_sync(
        lambda: recorder.append("agreement", canonical.sha256(b"cli"), {"via": "cli"}))
    assert (receipt.status, receipt.index) == ("appended", total)
    retry = await trio.to_thread.run_sync(
        lambda: recorder.append("agreement", canonical.sha256(b"cli"), {"via": "cli"}))
    assert (retry.status, retry.index) == ("duplicate", total)
    total += 1
    await region.until(lambda: region.sizes(ds) == [total] * 4)
    assert all(d.ledger.alarms_raised == 0 for d in ds)
    for d in ds:
        d.stop()


async def test_stopping_the_leader_elects_another_and_loses_no_committed_entry(region,
                                                                               nursery):
    ds, leader = await region.start_region(nursery)
    first = await ds[0].ledger.submit(statements(1, "before", 30), timeout_s=30)
    old_term = leader.ledger.node.term
    leader.stop()
    survivors = [d for d in ds if d is not leader]
    new = await region.leader(survivors)
    assert new.ledger.node.term > old_term
    later = await survivors[0].ledger.submit(statements(5, "after", 20), timeout_s=30)
    await region.until(lambda: region.sizes(survivors) == [50, 50])
    for d in survivors:
        log = list(d.ledger.ledger.entries())
        for receipt in first + later:
            assert log[receipt.index].idempotency_key == receipt.idempotency_key
        assert d.ledger.ledger.verify().ok
    assert encoded_log(survivors[0]) == encoded_log(survivors[1])
    for d in survivors:
        d.stop()


async def test_a_forged_tree_head_in_gossip_raises_a_fork_alarm(region, nursery):
    ds, leader = await region.start_region(nursery)
    await ds[1].ledger.submit(statements(2, "honest", 10), timeout_s=30)
    await region.until(lambda: all((h := d.ledger.ledger.latest_head()) is not None
                                   and h.size == 10 for d in ds))
    assert all(d.ledger.alarms_raised == 0 for d in ds)
    victim, sender = [d for d in ds if d is not leader]
    # The leader's key signs a second history of the same size: equivocation.
    leader_key = key_from_int(ds.index(leader) + 1)
    forged = SignedTreeHead.create(leader_key, 10, canonical.sha256(b"another history"),
                                   timestamp=1, log_id=region_log_id("eu"))
    stream = await sender.host.new_stream(to_id(victim.peer_id), [RAFT_PROTOCOL_ID])
    fs = FramedStream(stream)
    voters = tuple(sorted(region.voter_ids(1, 2, 3)))
    await fs.send(LedgerGossip(head=forged.encode(), voters=voters))
    await region.until(lambda: victim.ledger.alarms_raised >= 1)
    alarms = victim.ledger.ledger.alarms()
    assert alarms and alarms[0].kind is AlarmKind.SAME_SIZE_DIFFERENT_ROOT
    assert forged.root in (alarms[0].first.root, alarms[0].second.root)
    assert alarms[0].source == sender.peer_id
    metric = victim.metrics.registry.get_sample_value("gd_ledger_fork_alarms_total")
    assert metric == victim.ledger.alarms_raised
    await fs.close()
    for d in ds:
        d.stop()


async def test_a_late_learner_catches_up_from_a_snapshot_and_proposes_its_outbox(region,
                                                                                 nursery):
    voters = region.voter_ids(1, 2, 3)

    def compact_often(d) -> None:
        d.ledger.catchup.compact_every = 4

    ds, leader = await region.start_region(nursery, on_ready=compact_often)
    for i in range(12):  # separate Raft entries, so the logs compact several times
        await ds[i % 3].ledger.submit(statements(1 + i % 3, f"early{i}", 3), timeout_s=30)
    await region.until(lambda: leader.ledger.node.log.snapshot_index > 8)
    # Node 4 recorded two events while no daemon ran: they wait in its outbox.
    queued = OutboxRoute(region.cortex(4).env).submit(statements(4, "offline", 2))
    assert [q.status for q in queued] == ["queued", "queued"]
    learner = await region.start(nursery, 4, voters, boot=ds)
    everyone = [*ds, learner]
    await region.connected(*everyone)
    await region.until(lambda: region.sizes(everyone) == [38] * 4)
    assert all(encoded_log(d) == encoded_log(leader) for d in everyone)
    assert learner.ledger.ledger.verify().ok
    assert learner.ledger.node.log.snapshot_index > 0
    assert OutboxRoute(region.cortex(4).env).queued() == []
    authors = {e.author for e in leader.ledger.ledger.entries(36)}
    assert authors == {key_from_int(4).peer_id}
    for d in everyone:
        d.stop()
