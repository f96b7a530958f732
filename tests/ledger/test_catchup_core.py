"""Snapshot catch-up's core (gd.ledger.catchup_core): whom to ask, what to ask, which
answers fit, the serving side's bounds, and the root check — no streams, no disk."""

from __future__ import annotations

import pytest
from gd_testkit import key_from_int

from gd.genome import canonical
from gd.ledger.catchup_core import (
    FETCH_BACKOFF_MAX_S,
    FETCH_BACKOFF_S,
    FETCH_CHUNK_BYTES,
    FETCH_CHUNK_ENTRIES,
    SnapshotFetch,
    SnapshotState,
    chunk_reply,
    should_compact,
)
from gd.ledger.entry import LedgerEntry
from gd.ledger.errors import LocalLedgerError, RemoteLedgerError
from gd.ledger.ledger_frames import LedgerChunk, LedgerFetch, LedgerGossip
from gd.protocol.errors import RemoteProtocolError

ME, LEADER, V2, V3 = (key_from_int(i).peer_id for i in range(1, 5))
ROOT = bytes(range(32))


def entries(n: int, start: int = 0) -> list[bytes]:
    key = key_from_int(9)
    out, prev = [], bytes(32)
    for i in range(start, start + n):
        e = LedgerEntry.create(key, "decision", 100 + i, canonical.sha256(bytes([i % 256])))
        e = e.sequenced(i, prev)
        prev = e.entry_hash
        out.append(e.encoded)
    return out


def fetch(size: int = 10, source: str | None = LEADER) -> SnapshotFetch:
    return SnapshotFetch(SnapshotState(size, ROOT, 42).encode(), source=source, me=ME,
                         snapshot_voters={ME, LEADER, V2}, voters={V3})


def test_snapshot_state_round_trips_and_refuses_bad_bytes() -> None:
    state = SnapshotState(7, ROOT, 3)
    assert SnapshotState.decode(state.encode()) == state
    for bad in (b"\x01", canonical.encode({"size": 1}),
                canonical.encode({"applied": 1, "root": b"short", "size": 1})):
        with pytest.raises(RemoteLedgerError):
            SnapshotState.decode(bad)


def test_members_are_asked_in_turn_source_first_and_never_ourselves() -> None:
    f = fetch()
    assert f.peers == [LEADER, LEADER, V2, V3]
    step = f.next(4)
    assert (step.peer, step.request, step.delay_s) == (LEADER, LedgerFetch(4, 10), 0.0)
    asked = []
    for _ in range(4):
        f.failed()
        step = f.next(4)
        asked.append((step.peer, step.delay_s))
    assert asked == [(LEADER, FETCH_BACKOFF_S), (V2, 2 * FETCH_BACKOFF_S),
                     (V3, 3 * FETCH_BACKOFF_S), (LEADER, 4 * FETCH_BACKOFF_S)]
    for _ in range(100):
        f.failed()
    assert f.next(4).delay_s == FETCH_BACKOFF_MAX_S
    assert f.next(10).done


def test_no_member_to_ask_is_our_problem() -> None:
    lonely = SnapshotFetch(SnapshotState(3, ROOT, 1).encode(), source=None, me=ME,
                           snapshot_voters={ME}, voters=set())
    with pytest.raises(LocalLedgerError, match="no member"):
        lonely.next(0)


def test_chunks_are_checked_against_what_we_asked() -> None:
    f = fetch(size=6)
    f.next(2)
    got = f.received(LedgerChunk(start=2, entries=tuple(entries(3, 2)), size=9))
    assert [e.index for e in got] == [2, 3, 4]
    assert f.more() == LedgerFetch(5, 6)
    for bad, why in ((LedgerChunk(start=4, entries=tuple(entries(1, 4)), size=9), "bad"),
                     (LedgerChunk(start=5, entries=(), size=9), "empty"),
                     (LedgerGossip(head=b"", voters=()), "bad"),
                     (LedgerChunk(start=5, entries=tuple(entries(2, 5)), size=9), "longer"),
                     (LedgerChunk(start=5, entries=(b"\x01",), size=9), "chunk")):
        with pytest.raises(RemoteProtocolError, match=why):
            f.received(bad)
    f.received(LedgerChunk(start=5, entries=tuple(entries(1, 5)), size=9))
    assert f.more() is None


def test_an_unasked_chunk_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="did not ask"):
        fetch().received(LedgerChunk(start=0, entries=tuple(entries(1)), size=1))


def test_a_root_that_disagrees_with_the_snapshot_stops_us() -> None:
    f = fetch()
    f.check_root(ROOT)
    with pytest.raises(LocalLedgerError, match="disagrees"):
        f.check_root(bytes(32))


def test_chunk_replies_are_bounded_in_entries_and_bytes() -> None:
    small = entries(5)
    assert chunk_reply(iter(small), 0, 3, 5).entries == tuple(small[:3])
    assert chunk_reply(iter(small), 0, 99, 5) == LedgerChunk(0, tuple(small), 5)
    big = [bytes(FETCH_CHUNK_BYTES // 2)] * 4
    assert len(chunk_reply(iter(big), 0, 4, 4).entries) == 2
    assert len(chunk_reply(iter([bytes(FETCH_CHUNK_BYTES + 1)]), 0, 1, 1).entries) == 1
    many = (b"x" for _ in range(FETCH_CHUNK_ENTRIES + 5))
    assert len(chunk_reply(many, 0, FETCH_CHUNK_ENTRIES + 5, 0).entries) == \
        FETCH_CHUNK_ENTRIES


def test_compaction_every_n_applied() -> None:
    assert not should_compact(109, 10, 100)
    assert should_compact(110, 10, 100)
