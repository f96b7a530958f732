"""The ledger's outbound links live in their peers' lifetimes (issue 12, item 3).

A real `PeerLifetimes` (what `Gate.spawn` runs work in) and the gate's `on_peer` events
drive `PeerLinks`; streams are in-memory stand-ins that record what is written and whether
they were reset. No sockets: the point is who starts and who ends each writer.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import trio
from gd_testkit import key_from_int
from prometheus_client import CollectorRegistry, Counter

from gd.crdt.clock import ManualClock
from gd.ledger.ledger_frames import LedgerGossip, RaftFrame
from gd.ledger.link_core import SILENT_S
from gd.ledger.raft_messages import Heartbeat
from gd.node.net.gate import PeerChange, PeerListener
from gd.node.net.host import to_id
from gd.node.net.lifetimes import PeerLifetimes
from gd.node.net.streams import FramedStream
from gd.node.services.ledger_links import PeerLinks
from gd.protocol.wire import FrameDecoder

ME = key_from_int(1).peer_id
PEER = key_from_int(2).peer_id
GOSSIP = LedgerGossip(head=b"", voters=(ME, PEER))
WAIT_S = 10.0  # generous: every wait below is bounded by it


class _Log:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kw: None


class MemoryStream:
    """What `FramedStream` needs of a libp2p stream: writes are kept, reads never end."""

    def __init__(self, peer: str, conn_rank: int = 0) -> None:
        # `rank`: where its connection stands in the gate's `ConnectionOrder`.
        self.muxed_conn = SimpleNamespace(peer_id=to_id(peer), rank=conn_rank)
        self.written = bytearray()
        self.wrote = trio.Event()
        self.was_reset = trio.Event()

    async def write(self, data: bytes) -> None:
        self.written += data
        self.wrote.set()

    async def read(self, n: int = -1) -> bytes:
        await trio.sleep_forever()
        return b""

    async def reset(self) -> None:
        self.was_reset.set()

    def frames(self) -> list[Any]:
        dec = FrameDecoder()
        dec.feed(bytes(self.written))
        return list(dec)


class FakeGate:
    """The gate's side of a peer's life: `spawn` into real lifetimes, `on_peer` events."""

    def __init__(self) -> None:
        self.lifetimes = PeerLifetimes(_Log(), self._failed)
        self.listeners: list[PeerListener] = []
        self.records: dict[str, SimpleNamespace] = {}
        self.table = SimpleNamespace(get=self.records.get)
        self.streams: list[MemoryStream] = []
        self.host = SimpleNamespace(new_stream=self._new_stream)
        self.failures: list[BaseException] = []
        self.suspected: list[tuple[str, str]] = []  # what the links asked liveness to probe
        self.newest = 0  # the rank of the newest connection, where new streams go

    @staticmethod
    def newer_connection(stream: Any, than: Any) -> bool:
        return bool(stream.muxed_conn.rank > than.muxed_conn.rank)

    def suspect(self, peer: str, reason: str) -> bool:
        self.suspected.append((peer, reason))
        return True

    async def _failed(self, peer: str, exc: BaseException) -> None:
        self.failures.append(exc)

    async def _new_stream(self, peer_id: Any, protocols: list[str]) -> MemoryStream:
        stream = MemoryStream(peer_id.to_base58(), self.newest)
        self.streams.append(stream)
        return stream

    def spawn(self, peer_id: str, fn: Any, *args: Any) -> bool:
        return self.lifetimes.spawn(peer_id, fn, *args)

    def on_peer(self, listener: PeerListener) -> None:
        self.listeners.append(listener)

    def up(self, peer: str) -> None:
        self.records[peer] = SimpleNamespace(peer_id=peer, connected=True)
        self.lifetimes.begin(peer)
        for listener in self.listeners:
            listener(PeerChange(peer, up=True))

    def down(self, peer: str) -> None:
        self.records[peer].connected = False
        self.lifetimes.end(peer)
        for listener in self.listeners:
            listener(PeerChange(peer, up=False))


def make_links(gate: FakeGate, clock: ManualClock | None = None
               ) -> tuple[PeerLinks, Counter]:
    registry = CollectorRegistry()
    dropped = Counter("gd_raft_dropped", "", ["reason"], registry=registry)
    links = PeerLinks(gate, byte_counter=Counter("gd_bytes", "", ["protocol", "direction"],
                                                 registry=registry),
                      dropped=dropped, gossip=lambda: GOSSIP, clock=clock or ManualClock(),
                      log=_Log(), suspect=gate.suspect,
                      newer_connection=gate.newer_connection)
    return links, dropped


def no_stream(dropped: Counter) -> float:
    return dropped.labels(reason="no_stream")._value.get()  # type: ignore[no-any-return]


async def test_a_target_that_comes_up_is_linked_and_its_going_ends_the_link() -> None:
    gate = FakeGate()
    links, dropped = make_links(gate)
    async with trio.open_nursery() as nursery:
        await nursery.start(gate.lifetimes.run)
        links.follow(lambda: [PEER])  # not connected yet: nothing starts
        assert links.linked == frozenset() and gate.lifetimes.tasks(PEER) == 0

        gate.up(PEER)  # the gate's event, not a poll, starts its writer
        assert links.linked == {PEER}
        with trio.fail_after(WAIT_S):
            while not gate.streams:
                await trio.sleep(0.01)
            await gate.streams[0].wrote.wait()
        assert gate.streams[0].frames() == [GOSSIP]  # it hears our head at once
        assert gate.lifetimes.tasks(PEER) == 1

        links.send(Heartbeat(ME, PEER, 3))
        with trio.fail_after(WAIT_S):
            while len(gate.streams[0].frames()) < 2:
                await trio.sleep(0.01)
        assert gate.streams[0].frames()[1] == RaftFrame(Heartbeat(ME, PEER, 3))

        gate.down(PEER)  # dropping the peer ends its writer and resets its stream
        assert links.linked == frozenset()
        with trio.fail_after(WAIT_S):
            await gate.streams[0].was_reset.wait()
        links.send(Heartbeat(ME, PEER, 3))  # no writer for a peer that is gone
        assert links.linked == frozenset() and no_stream(dropped) == 1
        assert gate.lifetimes.tasks(PEER) == 0 and not gate.failures

        gate.up(PEER)  # back again: a fresh writer on a fresh stream
        with trio.fail_after(WAIT_S):
            while len(gate.streams) < 2:
                await trio.sleep(0.01)
        assert links.linked == {PEER}
        nursery.cancel_scope.cancel()


async def test_peers_that_are_not_targets_get_no_writer_until_raft_talks_to_them() -> None:
    gate = FakeGate()
    links, _ = make_links(gate)
    async with trio.open_nursery() as nursery:
        await nursery.start(gate.lifetimes.run)
        links.follow(lambda: [])
        gate.up(PEER)
        assert links.linked == frozenset()
        links.send(Heartbeat(ME, PEER, 1))  # Raft has something for it: linked now
        assert links.linked == {PEER}
        nursery.cancel_scope.cancel()


async def test_a_linked_peer_that_says_nothing_is_handed_to_the_liveness_probe() -> None:
    """A connection can deliver nothing one way while every write succeeds (the failover
    tail, docs/ledger.md): a target that has not been heard for SILENT_S is suspected,
    one whose frames arrive (`heard`, from `RaftInbound.serve`) is not."""
    gate = FakeGate()
    clock = ManualClock()
    links, _ = make_links(gate, clock)
    other = key_from_int(3).peer_id

    async def writes(peer_count: int) -> None:  # wake both writers and let them run
        links.send(Heartbeat(ME, PEER, 1))
        links.send(Heartbeat(ME, other, 1))
        with trio.fail_after(WAIT_S):
            while sum(len(s.frames()) for s in gate.streams) < peer_count:
                await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        await nursery.start(gate.lifetimes.run)
        links.follow(lambda: [PEER, other])
        gate.up(PEER)
        gate.up(other)
        await writes(2)  # both writers have looked once: the count starts
        written = sum(len(s.frames()) for s in gate.streams)
        clock.advance(SILENT_S / 2)
        links.heard(other)  # `other` talks; PEER does not
        await writes(written + 2)
        assert gate.suspected == []
        written = sum(len(s.frames()) for s in gate.streams)
        clock.advance(SILENT_S / 2)
        await writes(written + 2)
        assert gate.suspected == [(PEER, "silent on /gd/raft")]
        nursery.cancel_scope.cancel()


async def test_a_peer_writing_on_a_newer_connection_moves_our_stream_there() -> None:
    """Caught in the failover tail: we held the old and the new connection to a peer,
    the peer only the new one, and our long-lived stream stayed on the old one, where
    nothing read it. A stream the peer opens on a newer connection than ours uses
    (`RaftInbound.serve` calls `arrived`) makes our writer reopen at once, on the
    newest connection (the swarm's choice, `gd.node.net.conn_order`); one on the same
    connection moves nothing."""
    gate = FakeGate()
    links, dropped = make_links(gate)
    async with trio.open_nursery() as nursery:
        await nursery.start(gate.lifetimes.run)
        links.follow(lambda: [PEER])
        gate.up(PEER)
        with trio.fail_after(WAIT_S):
            while not gate.streams:
                await trio.sleep(0.01)
            await gate.streams[0].wrote.wait()
        old = gate.streams[0]
        links.arrived(PEER, FramedStream(MemoryStream(PEER, conn_rank=0)))  # same one
        await trio.sleep(0.05)
        assert links.moved == 0 and not old.was_reset.is_set() and len(gate.streams) == 1

        gate.newest = 1  # a second connection opened; the peer writes to us on it
        links.arrived(PEER, FramedStream(MemoryStream(PEER, conn_rank=1)))
        with trio.fail_after(WAIT_S):
            await old.was_reset.wait()
            while len(gate.streams) < 2:
                await trio.sleep(0.01)
            await gate.streams[1].wrote.wait()
        new = gate.streams[1]
        assert new.muxed_conn.rank == 1 and new.frames() == [GOSSIP]  # at once, no back-off
        assert links.moved == 1 and no_stream(dropped) == 0

        links.send(Heartbeat(ME, PEER, 4))  # Raft's frames follow it there
        with trio.fail_after(WAIT_S):
            while len(new.frames()) < 2:
                await trio.sleep(0.01)
        links.arrived(PEER, FramedStream(MemoryStream(PEER, conn_rank=1)))  # not newer
        links.arrived(PEER, FramedStream(MemoryStream(PEER, conn_rank=0)))  # older
        await trio.sleep(0.05)
        assert links.moved == 1 and len(gate.streams) == 2 and not new.was_reset.is_set()
        nursery.cancel_scope.cancel()
