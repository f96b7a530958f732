"""The pieces `service_sim_sov.SovNet` is built of: a simulated node (`SovNode`), its
gate and streams (`SovGate`, `SovStream`), its skewed clock, the wrappers that check
every gene a sovereign view sends or accepts (`CheckedSender`, `CheckedReceiver`), the
policy store that reports each proposal it receives, the kill that stands for a crash
inside a worker-thread call (`ProcessKilled`), and a run's result (`SovSimResult`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Final

import trio
import trio.testing
from libp2p.peer.id import ID
from service_sim import SimStream, TrioClock
from service_sim_log import SimLog

from gd.genome.gene import Gene
from gd.genome.identity import NodeKey
from gd.node.metrics import NodeMetrics
from gd.node.net.gate import PeerChange
from gd.node.net.streams import PeerTimeout
from gd.node.services.sovereignty_service import SovereigntyService
from gd.node.services.sync_service import SyncService
from gd.node.store.cortex import Cortex
from gd.protocol.agreement_messages import AGREEMENTS_PROTOCOL_ID
from gd.protocol.sovereignty_agreements import Proposal
from gd.protocol.sync import RejectedGene

if TYPE_CHECKING:
    from service_sim_sov import SovNet

# Every simulated node's region (one region: the ledger is a region of one).
REGION: Final = "eu-west"

class ProcessKilled(BaseException):
    """Raised inside a synchronous call to stand for the process dying right there (a
    `kill -9` in a worker thread's call); the harness then crashes the node. A
    BaseException, so the services' `except Exception` guards do not swallow it."""


@dataclass
class SovNode:
    """One organisation's daemon: its key, LMDB home, and the services of this life."""

    index: int
    key: NodeKey
    org: str
    path: Path
    life: int = 0
    cortex: Cortex | None = None
    gate: SovGate | None = None
    sync: SyncService | None = None
    sov: SovereigntyService | None = None
    written: list[Gene] = field(default_factory=list)
    last_hlc: int = 0
    region: str = REGION
    skew_ms: int = 0  # this node's clock runs this far ahead of the network's

    @property
    def peer(self) -> str:
        return self.key.peer_id

    @property
    def up(self) -> bool:
        return self.sov is not None


class SkewedClock(TrioClock):
    """A node's injected clock: the mock clock's wall time, `skew_ms` ahead (or behind);
    its monotonic clock is the network's (a skew is a wall-clock offset)."""

    def __init__(self, skew_ms: int = 0) -> None:
        self.skew_s = skew_ms / 1000

    def wall(self) -> float:
        return super().wall() + self.skew_s


class SovStream(SimStream):
    """`SimStream` plus drops (the stream stalls), partitions, and a recording of what
    the dialling end wrote (for a replay)."""

    def __init__(self, end: Any, remote: str, net: SovNet, src: int, dst: int) -> None:
        super().__init__(end, remote, net)  # type: ignore[arg-type]
        self.sov_net = net
        self.src, self.dst = src, dst
        self.stalled = False
        self.recording: list[bytes] | None = None
        self.on_close: Callable[[list[bytes]], None] | None = None

    async def write(self, data: bytes) -> None:
        net = self.sov_net
        if not self.stalled and (not net.linked(self.src, self.dst) or (
                net.faults and net.rng.random() < net.drop_rate)):
            net.log(f"fault drop {self.src}->{self.dst}")
            self.stalled = True
        if self.stalled:
            return  # lost; the reader's timer gives up on the stream
        await super().write(data)
        if self.recording is not None:
            self.recording.append(data)
        if net.faults and net.rng.random() < net.pause_rate:
            # the bytes have left and the writer is descheduled: a crash may land here,
            # before whatever the writer does next (its audit record, its outbox)
            await trio.sleep(net.rng.uniform(0.0, 0.05))

    async def close(self) -> None:
        if self.on_close is not None and self.recording:
            self.on_close(self.recording)
            self.on_close = None
        await super().close()


class SovGate:
    """What `SyncService` and `SovereigntyService` read from the daemon's `Gate`."""

    def __init__(self, net: SovNet, node: SovNode) -> None:
        self.net = net
        self.node = node
        self.peer_id = node.peer
        self.key = node.key
        self.cfg = SimpleNamespace(domains=net.domain_settings, org=node.org,
                                   region=node.region)
        self.log = SimLog()
        self.metrics = NodeMetrics()
        self.methods = SimpleNamespace(add=lambda name, fn: None)
        self.handlers: dict[str, Callable[..., Any]] = {}
        self.host = SimpleNamespace(new_stream=self.new_stream)
        self.table = SimpleNamespace(connected=self.connected, get=self.record)
        self.clock = SkewedClock(node.skew_ms)
        self.listeners: list[Callable[[PeerChange], None]] = []

    def record(self, peer: str) -> Any:
        """The peer's record: every simulated org key is trusted, so claims are certified."""
        other = self.net.by_peer(peer)
        return SimpleNamespace(peer_id=peer, certified_org=other.org,
                               certified_region=other.region)

    def connected(self) -> list[Any]:
        return [self.record(n.peer) for n in self.net.nodes
                if n is not self.node and n.up and self.net.linked(n.index, self.node.index)]

    def on_peer(self, listener: Callable[[PeerChange], None]) -> None:
        self.listeners.append(listener)

    def register_protocol(self, protocol: str, handler: Callable[..., Any]) -> None:
        self.handlers[str(protocol)] = handler

    def spawn(self, peer: str, fn: Callable[..., Any], *args: Any) -> bool:
        other = self.net.by_peer(peer)
        if not other.up or not self.net.linked(other.index, self.node.index):
            return False
        self.net.start(self.node, fn, *args)
        return True

    async def misbehaved(self, peer: str, protocol: str, exc: Exception) -> None:
        if isinstance(exc, PeerTimeout):  # a stalled stream: the network's doing, and
            self.net.log(f"timeout {protocol}")  # the gate scores it as a soft failure
            return
        self.net.fail(f"node {self.node.index} scored an honest peer on {protocol}: {exc}")

    async def new_stream(self, peer: ID, protocols: list[str]) -> SovStream:
        net = self.net
        other = net.by_peer(peer.to_base58())
        if other.gate is None or not net.linked(self.node.index, other.index):
            raise ConnectionError("peer unreachable")
        protocol = str(protocols[0])
        a, b = trio.testing.memory_stream_pair()
        mine = SovStream(a, other.peer, net, self.node.index, other.index)
        theirs = SovStream(b, self.peer_id, net, other.index, self.node.index)
        mine.other, theirs.other = theirs, mine
        if protocol == AGREEMENTS_PROTOCOL_ID and net.faults and \
                net.rng.random() < net.replay_rate:
            mine.recording = []
            mine.on_close = lambda data: net.replay_later(self.node, other, protocol, data)
        net.serve(other, other.gate.handlers[protocol], theirs, self.peer_id)
        return mine


class ObservedPolicyStore:
    """The node's real `PolicyStore`; each proposal it is handed is noted in the model
    (the newest stamp from each peer per domain is what the node *knows*)."""

    def __init__(self, store: Any, net: SovNet, node: SovNode) -> None:
        self._store = store
        self._net = net
        self._node = node

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def receive_proposal(self, data: bytes, sender: str, **kwargs: Any) -> Any:
        outcome = self._store.receive_proposal(data, sender, **kwargs)
        self._net.learned(self._node, sender, Proposal.decode(data))
        return outcome


class CheckedSender:
    """A sovereign sender view whose every cleared gene is checked against the model at
    the moment it is put in a batch or a repair reply."""

    def __init__(self, view: Any, check: Callable[[Gene], None],
                 check_items: Callable[[Any], None] | None = None) -> None:
        self.view = view
        self.check = check
        self.check_items = check_items  # what a repair round names to the receiver

    def repair_items(self) -> Any:
        items = self.view.repair_items()
        if self.check_items is not None:
            self.check_items(items)
        return items

    def read_feed(self, since: int, limit: int) -> Any:
        return self.view.read_feed(since, limit)

    def policy(self, receiver: str, gene: Gene) -> bool:
        ok: bool = self.view.policy(receiver, gene)
        if ok:
            self.check(gene)
        return ok

    def outgoing(self, gene: Gene) -> Gene | None:
        out: Gene | None = self.view.outgoing(gene)
        if out is not None:
            self.check(out)
        return out

    def finish_batch(self, extra: Sequence[Gene] = ()) -> int:
        return int(self.view.finish_batch(extra))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.view, name)  # whatever else the services ask the view


class CheckedReceiver:
    """A sovereign receiver view whose every accepted gene is checked against the model."""

    def __init__(self, view: Any, check: Callable[[Gene, float], None],
                 refused: Callable[[Gene, float], None] | None = None) -> None:
        self.view = view
        self.check = check
        self.refused = refused  # and every refused one: it must have a reason
        self.opened = trio.current_time()

    def accept(self, gene: Gene) -> bool:
        ok: bool = self.view.accept(gene)
        if ok:
            self.check(gene, self.opened)
        elif self.refused is not None:
            self.refused(gene, self.opened)
        return ok

    def finish_batch(self, refused: Sequence[RejectedGene] = (), **kwargs: Any) -> int:
        return int(self.view.finish_batch(refused, **kwargs))

    def __getattr__(self, name: str) -> Any:
        # `begin_batch`, `audit_in`: the puller looks them up on the view (getattr), so
        # the wrapper must not hide them, or the simulation runs another code path
        return getattr(self.view, name)


@dataclass(frozen=True)
class SovSimResult:
    seed: int
    trace_hash: str
    trace: list[str]
    stats: Counter[str]
