"""Fork alarms from cross-checking signed tree heads (sans-I/O monitor)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import lmdb
import pytest
from gd_testkit import key_from_int

from gd.genome import NodeKey
from gd.ledger.errors import RemoteLedgerError
from gd.ledger.forks import (
    AlarmKind,
    ForkAlarm,
    ForkMonitor,
    check_extension,
    same_size_alarm,
)
from gd.ledger.merkle import MemoryNodeStore, MerkleTree
from gd.ledger.sth import SignedTreeHead
from gd.node.store.ledger_store import Ledger

LOG = "eu-west"


def tree(items: list[bytes]) -> MerkleTree:
    t = MerkleTree(MemoryNodeStore())
    for item in items:
        t.append_data(item)
    return t


def head(key: NodeKey, t: MerkleTree, size: int, ts: int = 0) -> SignedTreeHead:
    return SignedTreeHead.create(key, size, t.root(size), ts, LOG)


@pytest.fixture
def honest() -> MerkleTree:
    return tree([f"e{i}".encode() for i in range(40)])


@pytest.fixture
def forked() -> MerkleTree:
    # Same first 17 entries, then a different history.
    return tree([f"e{i}".encode() for i in range(17)] +
                [f"other{i}".encode() for i in range(17, 40)])


def answer(monitor: ForkMonitor, t: MerkleTree, requests: tuple) -> list[ForkAlarm]:
    alarms: list[ForkAlarm] = []
    for request in requests:
        old, new = request.sizes
        alarms += monitor.check(request, t.consistency_proof(old, new))
    return alarms


def test_consistent_heads_raise_nothing(key: NodeKey, honest: MerkleTree) -> None:
    monitor = ForkMonitor(LOG)
    for size in (10, 30, 20, 40, 5, 0):
        observation = monitor.observe(head(key, honest, size), source="peer")
        assert observation.new and not observation.alarms
        assert answer(monitor, honest, observation.requests) == []
    assert monitor.pending() == ()
    assert monitor.alarms == []
    assert monitor.largest is not None and monitor.largest.size == 40
    # Seeing the same head again changes nothing.
    again = monitor.observe(head(key, honest, 20, ts=9))
    assert not again.new and not again.alarms and not again.requests


def test_same_size_different_root_is_an_alarm(key: NodeKey, other_key: NodeKey,
                                              honest: MerkleTree, forked: MerkleTree) -> None:
    monitor = ForkMonitor(LOG)
    monitor.observe(head(key, honest, 30))
    observation = monitor.observe(head(key, forked, 30), source="peer-b")
    (alarm,) = observation.alarms
    assert alarm.kind is AlarmKind.SAME_SIZE_DIFFERENT_ROOT
    assert alarm.equivocation and alarm.source == "peer-b"
    assert monitor.alarms == [alarm]
    between_signers = same_size_alarm(head(key, honest, 30), head(other_key, forked, 30))
    assert between_signers is not None and not between_signers.equivocation
    # Heads that agree, or are of different sizes, are not this kind of alarm.
    assert same_size_alarm(head(key, honest, 30), head(other_key, honest, 30)) is None
    assert same_size_alarm(head(key, honest, 30), head(key, forked, 31)) is None


def test_head_that_does_not_extend_an_earlier_one_is_an_alarm(
        key: NodeKey, honest: MerkleTree, forked: MerkleTree) -> None:
    monitor = ForkMonitor(LOG)
    monitor.observe(head(key, honest, 20))
    observation = monitor.observe(head(key, forked, 35), source="liar")
    (request,) = observation.requests
    assert request.sizes == (20, 35)
    # Whoever answers, from whichever history, the proof cannot join the two heads.
    for t in (honest, forked):
        (alarm,) = monitor.check(request, t.consistency_proof(20, 35))
        assert alarm.kind is AlarmKind.NOT_AN_EXTENSION
        assert (alarm.first.size, alarm.second.size) == (20, 35)
    # Before the fork point, the forked log is still an extension of the honest one.
    assert check_extension(head(key, honest, 10), head(key, forked, 17),
                           forked.consistency_proof(10, 17)) is None


def test_new_head_is_checked_against_both_neighbours(key: NodeKey, honest: MerkleTree,
                                                     forked: MerkleTree) -> None:
    monitor = ForkMonitor(LOG)
    for size in (10, 30):
        answer(monitor, honest, monitor.observe(head(key, honest, size)).requests)
    observation = monitor.observe(head(key, forked, 20))
    assert sorted(r.sizes for r in observation.requests) == [(10, 20), (20, 30)]
    alarms = answer(monitor, forked, observation.requests)
    assert [a.kind for a in alarms] == [AlarmKind.NOT_AN_EXTENSION]
    assert (alarms[0].first.size, alarms[0].second.size) == (20, 30)


def test_bad_heads_and_wrong_answers_are_remote_errors(key: NodeKey, other_key: NodeKey,
                                                       honest: MerkleTree) -> None:
    monitor = ForkMonitor(LOG, trusted_signers={key.peer_id})
    with pytest.raises(RemoteLedgerError, match="signature"):
        monitor.observe(replace(head(key, honest, 10), size=11))
    with pytest.raises(RemoteLedgerError, match="not trusted"):
        monitor.observe(head(other_key, honest, 10))
    with pytest.raises(RemoteLedgerError, match="log"):
        monitor.observe(SignedTreeHead.create(key, 10, honest.root(10), 0, "elsewhere"))
    assert monitor.largest is None  # nothing was recorded
    monitor.observe(head(key, honest, 10))
    (request,) = monitor.observe(head(key, honest, 20)).requests
    with pytest.raises(RemoteLedgerError, match="sizes"):
        monitor.check(request, honest.consistency_proof(10, 21))
    assert monitor.pending() == (request,)  # still waiting for a proper answer
    assert monitor.check(request, honest.consistency_proof(10, 20)) == ()


def test_monitor_keeps_a_bounded_number_of_heads(key: NodeKey, honest: MerkleTree) -> None:
    monitor = ForkMonitor(LOG, max_heads=4)
    for size in range(1, 11):
        monitor.observe(head(key, honest, size))
    assert monitor.head(1) is None and monitor.head(10) is not None
    assert all(p.new.size > 6 for p in monitor.pending())


def test_alarms_round_trip_and_persist_in_the_ledger(tmp_path: Path, key: NodeKey,
                                                     honest: MerkleTree,
                                                     forked: MerkleTree) -> None:
    alarm = same_size_alarm(head(key, honest, 25), head(key_from_int(3), forked, 25), "p")
    assert alarm is not None
    assert ForkAlarm.decode(alarm.encode()) == alarm
    with pytest.raises(RemoteLedgerError):
        ForkAlarm.decode(b"\x81\xa1x\x01")
    env = lmdb.open(str(tmp_path / "cortex"), max_dbs=64, map_size=1 << 24)
    try:
        ledger = Ledger(env)
        assert ledger.record_alarm(alarm) == 0
        assert ledger.record_alarm(alarm) == 1
        assert ledger.alarms() == [alarm, alarm]
        assert alarm.to_json()["log_id"] == LOG
    finally:
        env.close()
