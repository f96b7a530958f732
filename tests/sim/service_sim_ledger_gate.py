"""The simulated plumbing of `service_sim_ledger`: one voter's daemon (`LedgerNode`), the
gate its `LedgerService` reads (`LedgerGate`: config, key, clock, metrics, control
methods, protocol registration, streams, peer table, per-peer lifetimes, connection
events, misbehaviour) and streams that know the cut between their two nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Final

import trio
import trio.testing
from libp2p.peer.id import ID
from service_sim import SimStream, TrioClock
from service_sim_log import SimLog

from gd.genome.identity import NodeKey
from gd.node.metrics import NodeMetrics
from gd.node.net.conn_order import ConnectionOrder
from gd.node.net.gate import PeerChange
from gd.node.net.streams import PeerTimeout
from gd.node.services.ledger_service import LedgerService
from gd.node.store.cortex import Cortex

if TYPE_CHECKING:
    from service_sim_ledger import LedgerNet

REGION: Final = "eu-west"


@dataclass
class LedgerNode:
    """One voter's daemon: its key, LMDB home, and the service of this life."""

    index: int
    key: NodeKey
    path: Path
    life: int = 0
    cortex: Cortex | None = None
    gate: LedgerGate | None = None
    svc: LedgerService | None = None
    methods: dict[str, Callable[..., Any]] = field(default_factory=dict)

    @property
    def peer(self) -> str:
        return self.key.peer_id

    @property
    def up(self) -> bool:
        return self.svc is not None


class LedgerLog(SimLog):
    """`SimLog` plus `debug`, which the ledger's links use (not kept: it is chatty)."""

    def debug(self, event: str, **fields: Any) -> None:
        return None


class LedgerStream(SimStream):
    """`SimStream` that knows its two nodes: a write across a cut resets the stream."""

    def __init__(self, end: Any, remote: str, net: LedgerNet, src: int, dst: int) -> None:
        super().__init__(end, remote, net)  # type: ignore[arg-type]
        self.src, self.dst = src, dst
        self.ledger_net = net

    async def write(self, data: bytes) -> None:
        if not self.ledger_net.connected(self.src, self.dst):
            await self.reset()
            raise trio.ClosedResourceError("connection gone")
        await super().write(data)


class LedgerGate:
    """What `LedgerService` reads from the daemon's `Gate`: config, key, clock, metrics,
    control methods, protocol registration, streams, the peer table, per-peer lifetimes,
    connection events, misbehaviour, and the liveness probe a silent link asks for (the
    sim's cuts are the black holes it is for: here it is only counted, connections are
    the sim's to make and break)."""

    def __init__(self, net: LedgerNet, node: LedgerNode) -> None:
        self.net = net
        self.node = node
        self.peer_id = node.peer
        self.key = node.key
        self.cfg = SimpleNamespace(region=REGION, domains={},
                                   ledger_voters=[n.peer for n in net.nodes])
        self.log = LedgerLog()
        self.metrics = NodeMetrics()
        self.methods = SimpleNamespace(add=self.add_method)
        self.handlers: dict[str, Callable[..., Any]] = {}
        self.host = SimpleNamespace(new_stream=self.new_stream)
        self.table = SimpleNamespace(connected=self.connected, get=self.record)
        self.clock = TrioClock()
        self.listeners: list[Callable[[PeerChange], None]] = []
        self.rng_nonce = net.rng.randbytes  # the daemon's os.urandom, seeded
        self.suspicions: list[str] = []
        self.liveness = SimpleNamespace(suspect=self.suspect)
        # The daemon's: the sim's streams name no connection, so none is ever newer.
        self.conn_order = ConnectionOrder()

    def add_method(self, name: str, fn: Callable[..., Any], **_: Any) -> None:
        self.node.methods[name] = fn

    def suspect(self, peer: str, reason: str) -> bool:
        self.suspicions.append(peer)
        return True

    def record(self, peer: str) -> Any:
        other = self.net.by_peer(peer)
        return SimpleNamespace(peer_id=peer, region=REGION, certified_region=REGION,
                               connected=self.net.connected(self.node.index, other.index))

    def connected(self) -> list[Any]:
        return [self.record(n.peer) for n in self.net.nodes
                if n is not self.node and self.net.connected(self.node.index, n.index)]

    def on_peer(self, listener: Callable[[PeerChange], None]) -> None:
        self.listeners.append(listener)

    def register_protocol(self, protocol: str, handler: Callable[..., Any]) -> None:
        self.handlers[str(protocol)] = handler

    def spawn(self, peer: str, fn: Callable[..., Any], *args: Any) -> bool:
        other = self.net.by_peer(peer)
        if not self.net.connected(self.node.index, other.index):
            return False
        self.net.start(self.node, fn, *args, peer=other.index)
        return True

    async def misbehaved(self, peer: str, protocol: str, exc: Exception) -> None:
        if isinstance(exc, PeerTimeout):
            self.net.log(f"timeout {protocol}")
            return
        self.net.fail(f"node {self.node.index} scored an honest peer on {protocol}: {exc}")

    async def new_stream(self, peer: ID, protocols: list[str]) -> LedgerStream:
        net = self.net
        other = net.by_peer(peer.to_base58())
        if other.gate is None or not net.connected(self.node.index, other.index):
            raise ConnectionError("peer unreachable")
        a, b = trio.testing.memory_stream_pair()
        mine = LedgerStream(a, other.peer, net, self.node.index, other.index)
        theirs = LedgerStream(b, self.peer_id, net, other.index, self.node.index)
        mine.other, theirs.other = theirs, mine
        net.streams.append(mine)
        net.serve(other, other.gate.handlers[str(protocols[0])], theirs, self.node)
        return mine
