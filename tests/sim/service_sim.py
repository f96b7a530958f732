"""The daemon's async sync service, run in-process on a simulated gate, streams and clock.

Why: `fedsim` drives the conversation code the services run (cores, views, repairer,
delivery) but schedules the conversations itself. This harness runs the async drivers
themselves (`SyncService.pull` -> `FeedPuller`, `FeedServer.serve_sync`,
`SyncService.reconcile` -> `Repairer`, `SyncService.guard_round`) between two nodes, each
with a real Cortex, on trio, so their stream handling, timeouts, locks and cancellation
are under test too, and every run replays exactly by seed:

* **Clock**: `trio.testing.MockClock(autojump_threshold=0)`: time jumps to the next
  deadline whenever every task is blocked, so read timeouts and sleeps cost nothing.
* **Threads**: the services hand LMDB and CPU work to `trio.to_thread.run_sync`; here it
  runs inline (a worker thread would let the mock clock jump while it works, and its
  timing is not the seed's). Each call is still a checkpoint, where a crash may land.
* **Scheduling**: trio shuffles each batch of runnable tasks with its module random
  `trio._core._run._r`, deterministically only when `_ALLOW_DETERMINISTIC_SCHEDULING` is
  set (what trio's Hypothesis plugin does). `deterministic_trio(seed)` sets it and seeds
  `_r`, so one seed gives one interleaving.
* **Gate and streams**: `SimGate` is what the services read from a `Gate` (peer id,
  protocol registration, `host.new_stream`, the peer table, misbehaviour); each stream is
  a `trio.testing.memory_stream_pair`, wrapped by `SimStream`, which injects the faults
  from the seeded random: writes split into pieces (frames cross read boundaries),
  delays, and resets (the connection drops mid-conversation).
* **Crash**: cancel the node's work at a random moment, close its Cortex, reopen it and
  build a new service (every in-memory state lost, committed transactions kept).

Invariants: a peer's honest frames are never scored as misbehaviour; a round either
finishes or ends in `StreamGone`/timeout (never another error); the receiver's
checkpoint never passes the sender's feed head; every gene the receiver holds is the
sender's version; after the faults stop, a few rounds bring both nodes to the same genes.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio
import trio.testing
from libp2p.peer.id import ID
from service_sim_log import SimLog

import gd.node.clock
from gd.crdt import hlc
from gd.genome.gene import Codon, Gene
from gd.genome.identity import NodeKey
from gd.node.config_sections import SyncSettings
from gd.node.metrics import NodeMetrics
from gd.node.net.streams import FramedStream, StreamGone
from gd.node.services.sync_repair import REPAIR_READ_TIMEOUT_S
from gd.node.services.sync_service import SyncService, share_all
from gd.node.services.verify_pool import VerifyPool
from gd.node.store.cortex import Cortex
from gd.node.store.sync_store import any_content
from gd.protocol.errors import RemoteProtocolError

STEPS = 40
EPOCH_MS = 1_700_000_000_000
DOMAIN = "turbofan"


class ServiceSimFailure(AssertionError):
    """An invariant broke; the message starts with ``FAILED SEED=<seed>``."""


@contextmanager
def deterministic_trio(seed: int) -> Iterator[None]:
    """Make trio's run-queue order a function of `seed` (module docstring)."""
    run = trio._core._run
    saved = run._ALLOW_DETERMINISTIC_SCHEDULING, run._r.getstate()
    run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    run._r.seed(seed)
    saved_thread = trio.to_thread.run_sync

    async def inline(fn: Callable[..., Any], *args: Any, **_: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return fn(*args)

    trio.to_thread.run_sync = inline  # type: ignore[assignment]
    try:
        yield
    finally:
        trio.to_thread.run_sync = saved_thread  # type: ignore[assignment]
        run._ALLOW_DETERMINISTIC_SCHEDULING = saved[0]  # type: ignore[misc]
        run._r.setstate(saved[1])


class SimStream:
    """One end of an in-memory stream (the libp2p `INetStream` surface FramedStream
    uses), with the network's faults on every write."""

    def __init__(self, end: Any, remote: str, net: Net) -> None:
        self.end = end
        self.net = net
        self.muxed_conn = SimpleNamespace(peer_id=ID.from_base58(remote))
        self.other: SimStream | None = None

    async def write(self, data: bytes) -> None:
        net = self.net
        if net.faults and net.rng.random() < net.reset_rate:
            net.log("fault reset")
            await self.reset()
            raise trio.ClosedResourceError("connection reset")
        if net.faults and net.rng.random() < net.delay_rate:
            delay = net.rng.uniform(0.01, 2.0)
            net.log(f"fault delay {delay:.3f}")
            await trio.sleep(delay)
        if net.corrupt_rate and len(data) > 8 and net.rng.random() < net.corrupt_rate:
            data = data[:6] + bytes([data[6] ^ 0xFF]) + data[7:]
        pieces = [data]
        if net.faults and len(data) > 1 and net.rng.random() < 0.3:
            cut = net.rng.randrange(1, len(data))
            pieces = [data[:cut], data[cut:]]
        for piece in pieces:
            await self.end.send_all(piece)

    async def read(self, n: int) -> bytes:
        return bytes(await self.end.receive_some(n))

    async def close(self) -> None:
        await self.end.aclose()

    async def reset(self) -> None:
        # Both ends close before anything else runs: with a checkpoint in between (two
        # `aclose`s), the other end read a clean end first, which a reset is not.
        for stream in (self, self.other):
            if stream is not None:
                stream.end.send_stream.close()
                stream.end.receive_stream.close()
        await trio.lowlevel.checkpoint()


@dataclass
class SimNode:
    """One daemon: its key, Cortex directory, gate and sync service (rebuilt on restart)."""

    index: int
    key: NodeKey
    path: Path
    cortex: Cortex | None = None
    svc: SyncService | None = None
    gate: SimGate | None = None
    written: list[Gene] = field(default_factory=list)

    @property
    def peer(self) -> str:
        return self.key.peer_id


class TrioClock:
    """The injected `Clock` (gd.crdt.clock) reading trio's clock: the `MockClock`."""

    def wall(self) -> float:
        return EPOCH_MS / 1000 + trio.current_time()

    def monotonic(self) -> float:
        return trio.current_time()

    def hlc_now(self) -> int:
        return hlc.pack(int(self.wall() * 1000), 0)


class SimGate:
    """What `SyncService` reads from the daemon's `Gate`: a peer id, protocol
    registration, `host.new_stream`, the table of connected peers, misbehaviour."""

    def __init__(self, net: Net, node: SimNode) -> None:
        self.net = net
        self.node = node
        self.peer_id = node.peer
        self.key = node.key
        self.cfg = SimpleNamespace(domains={})
        self.log = SimLog()
        self.metrics = NodeMetrics()
        self.methods = SimpleNamespace(add=lambda name, fn: None)
        self.handlers: dict[str, Callable[..., Any]] = {}
        self.host = SimpleNamespace(new_stream=self.new_stream)
        self.table = SimpleNamespace(connected=lambda: [
            SimpleNamespace(peer_id=n.peer) for n in net.nodes if n is not node])
        self.clock = TrioClock()
        self.listeners: list[Callable[..., Any]] = []

    def on_peer(self, listener: Callable[..., Any]) -> None:
        """Connection events: this simulation starts every round itself (auto off)."""
        self.listeners.append(listener)

    def register_protocol(self, protocol: str, handler: Callable[..., Any]) -> None:
        self.handlers[str(protocol)] = handler

    async def misbehaved(self, peer: str, protocol: str, exc: Exception) -> None:
        self.net.fail(f"node {self.node.index} scored an honest peer on {protocol}: {exc}")

    async def new_stream(self, peer: ID, protocols: list[str]) -> SimStream:
        other = next(n for n in self.net.nodes if n.peer == peer.to_base58())
        if other.gate is None:
            raise ConnectionError("peer down")
        a, b = trio.testing.memory_stream_pair()
        mine, theirs = SimStream(a, other.peer, self.net), SimStream(b, self.peer_id, self.net)
        mine.other, theirs.other = theirs, mine
        handler = other.gate.handlers[str(protocols[0])]
        self.net.serve(other, handler, theirs, self.peer_id)
        return mine


class Net:
    """Two nodes, the seeded random, the trace, and the nursery streams are served in."""

    def __init__(self, seed: int, root: Path) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.root = root
        self.trace: list[str] = []
        self.faults = True
        self.reset_rate = 0.05
        self.delay_rate = 0.1
        self.reconcile_rate = 0.3
        self.corrupt_rate = 0.0  # flip a byte of a write (the teeth tests only)
        self.nodes = [SimNode(i, NodeKey.from_seed(hashlib.sha256(
            f"service-sim/{seed}/{i}".encode()).digest()), root / f"node{i}") for i in range(2)]
        self.nursery: trio.Nursery | None = None
        # every task of a node's current life runs in one of its scopes; a crash cancels all
        self.scopes: dict[int, list[trio.CancelScope]] = {0: [], 1: []}

    def log(self, text: str) -> None:
        self.trace.append(f"{trio.current_time():.6f} {text}")

    def fail(self, text: str) -> None:
        raise ServiceSimFailure(f"FAILED SEED={self.seed}: {text}")

    def open(self, node: SimNode) -> None:
        node.cortex = Cortex.open(node.path)
        node.gate = SimGate(self, node)
        svc = SyncService(node.gate, node.cortex,  # type: ignore[arg-type]
                          settings=SyncSettings(auto=False, compress=self.rng.random() < 0.5,
                                                batch_genes=self.rng.randint(1, 8)),
                          share_policy=share_all)
        svc.store.content_check = any_content  # synthetic genes: no domain pack check
        svc.verify_pool = VerifyPool(workers=1)  # inline: no thread timing in the run
        node.svc = svc

    def scope(self, node: SimNode) -> trio.CancelScope:
        """A new scope for one task of `node`'s current life."""
        scope = trio.CancelScope()
        self.scopes[node.index].append(scope)
        return scope

    def crash(self, node: SimNode) -> None:
        for scope in self.scopes[node.index]:
            scope.cancel()
        self.scopes[node.index] = []
        assert node.cortex is not None
        node.cortex.close()
        node.cortex, node.svc, node.gate = None, None, None
        self.log(f"crash {node.index}")

    def serve(self, node: SimNode, handler: Callable[..., Any], stream: SimStream,
              remote: str) -> None:
        """A stream's server side runs in the node's scope (a crash cancels it)."""
        scope = self.scope(node)

        async def run() -> None:
            with scope:
                try:
                    await handler(FramedStream(stream), SimpleNamespace(peer_id=remote))
                except (StreamGone, trio.TooSlowError):
                    pass
                except RemoteProtocolError as exc:
                    self.fail(f"node {node.index} refused an honest stream: {exc}")

        assert self.nursery is not None
        self.nursery.start_soon(run)

    def write(self, node: SimNode) -> None:
        assert node.cortex is not None
        stamp = hlc.pack(EPOCH_MS + int(trio.current_time() * 1000), len(node.written))
        gene = Gene.create(node.key, domain=DOMAIN, name=f"rule-{node.index}-{len(node.written)}",
                           codons=[Codon.simple("s11", ">", self.rng.randint(0, 99))],
                           action="inspect", hlc=stamp)
        node.cortex.put_gene(gene)
        node.written.append(gene)
        self.log(f"write {node.index} {gene.id[:8]}")

    async def round(self, node: SimNode, other: SimNode) -> None:
        """One pull (and sometimes a reconcile) from `other`, through `guard_round`, in
        the node's scope; the outcome goes into the trace."""
        assert node.svc is not None and node.gate is not None
        svc, log = node.svc, node.gate.log
        errors: list[str] = []
        stats = None
        reconcile = self.rng.random() < self.reconcile_rate
        with self.scope(node):
            stats = await svc.guard_round(other.peer, "pull", svc.pull(other.peer), errors)
            if stats is not None and reconcile:
                stats = await svc.guard_round(other.peer, "reconcile",
                                              svc.reconcile(other.peer), errors)
        failed = [e for e in log.events if e[0] == "error"]
        # guard_round logs a local failure (anything but a cut stream) as error. A node
        # crashed during the round is not at fault for what its dead life logged after:
        # `crash` closes the Cortex at once (a killed process runs nothing more), so the
        # round's shielded commit of staged batches meets a closed environment, which a
        # daemon never sees (it closes the Cortex after its tasks end).
        if failed and node.svc is svc:
            self.fail(f"node {node.index}: a round failed: {failed[0]}")
        got = "-" if stats is None else f"{stats.genes_in}/{stats.batches}/{stats.repaired}"
        self.log(f"round {node.index}<-{other.index} in/batches/repaired={got} "
                 f"errors={len(errors)}")
        self.check(node, other)

    def check(self, node: SimNode, other: SimNode) -> None:
        if node.cortex is None or other.cortex is None:
            return
        checkpoint = node.cortex.get_checkpoint(other.peer)
        if checkpoint > other.cortex.last_seq:
            self.fail(f"node {node.index}'s checkpoint {checkpoint} passed the feed head "
                      f"{other.cortex.last_seq} of node {other.index}")
        for gene in other.written:
            held = node.cortex.get_gene(gene.id)
            if held is not None and held.version_hash != gene.version_hash:
                self.fail(f"node {node.index} holds another version of {gene.id}")

    async def main(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            for node in self.nodes:
                self.open(node)
            for _ in range(STEPS):
                await trio.sleep(self.rng.uniform(0.0, 1.0))
                node = self.rng.choice(self.nodes)
                other = self.nodes[1 - node.index]
                event = self.rng.choices(("write", "sync", "crash"), (3, 6, 1))[0]
                if node.svc is None:
                    self.open(node)
                    self.log(f"restart {node.index}")
                elif event == "write":
                    self.write(node)
                elif event == "sync" and other.svc is not None:
                    if self.rng.random() < 0.3:  # crash mid-round
                        nursery.start_soon(self.round, node, other)
                        await trio.sleep(self.rng.uniform(0.0, 0.05))
                        if node.svc is not None:
                            self.log(f"crash-mid-round {node.index}")
                            self.crash(node)
                    else:
                        await self.round(node, other)
                elif event == "crash":
                    self.crash(node)
            await self.settle()
            nursery.cancel_scope.cancel()

    async def settle(self) -> None:
        self.faults = False
        await trio.sleep(REPAIR_READ_TIMEOUT_S + 1)  # every stream of a cut round times out
        for node in self.nodes:
            if node.svc is None:
                self.open(node)
        for _ in range(3):
            for node in self.nodes:
                await self.round(node, self.nodes[1 - node.index])
        a, b = (sorted((g.id, g.version_hash) for g in n.cortex.genes())  # type: ignore[union-attr]
                for n in self.nodes)
        if a != b:
            self.fail(f"not converged: {len(a)} genes vs {len(b)}")
        self.log(f"settled genes={len(a)}")


@dataclass(frozen=True)
class ServiceSimResult:
    seed: int
    trace_hash: str
    trace: list[str]
    genes: int
    kinds: Counter[str]  # trace events by kind (fault, round, crash, ...)


def drive(net: Any, seed: int, *, stores_on_mock_clock: bool = False) -> None:
    """Run `net.main` on trio's mock clock under `deterministic_trio(seed)`: a failure
    inside the nursery is raised plainly, and every node's Cortex is closed however the
    run ends. `stores_on_mock_clock`: the stores' module-level `hlc_now()` (which reads
    `gd.node.clock.SYSTEM_CLOCK`) follows the mock clock too, for the run only."""
    saved = gd.node.clock.SYSTEM_CLOCK
    if stores_on_mock_clock:
        gd.node.clock.SYSTEM_CLOCK = TrioClock()
    try:
        with deterministic_trio(seed):
            trio.run(net.main, clock=trio.testing.MockClock(autojump_threshold=0))
    except BaseExceptionGroup as group:  # a failure inside the nursery: show it plainly
        failures, _ = group.split(ServiceSimFailure)
        while isinstance(failures, BaseExceptionGroup):
            failures = failures.exceptions[0]
        if failures is not None:
            raise failures from None
        raise
    finally:
        gd.node.clock.SYSTEM_CLOCK = saved
        for node in net.nodes:
            if node.cortex is not None:
                node.cortex.close()


def run(seed: int, root: Path, net_class: type[Net] = Net) -> ServiceSimResult:
    """One seeded run under `root`; `ServiceSimFailure` when an invariant breaks."""
    net = net_class(seed, root)
    drive(net, seed)
    digest = hashlib.sha256("\n".join(net.trace).encode()).hexdigest()
    genes = sum(len(n.written) for n in net.nodes)
    kinds = Counter(line.split()[1] for line in net.trace)
    return ServiceSimResult(seed, digest, net.trace, genes, kinds)
