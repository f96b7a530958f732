"""The region's real Raft ledger service on three voters, in-process on trio's mock clock,
over a simulated gate and faulty streams; one seed gives one run, bit for bit.

Why: `raftsim` drives the sans-I/O Raft core alone, and the other service simulations
stand a direct ledger sink in for the region. The code between them (the service's
loop, the proposer's batches, retries and waiters, LMDB Raft storage, the applier's
group commits, the links' long-lived streams, inbound checks, gossip of signed heads,
catch-up) ran only in real-process tests, where no seed replays. Here each of three
nodes runs `LedgerService` exactly as the daemon builds it (`LedgerService(gate,
cortex)` on its own LMDB home, its `run()` task, its control methods), and clients call
the control methods `gd-node ledger append` and the recorder's `ledger_submit` use.

Clock, threads and scheduling: `service_sim`'s (`TrioClock`, `deterministic_trio`, worker
threads inline). The service's one random input, the per-start nonce of its proposer
client id (the gate's `rng_nonce`), and its Raft election seed come from the seed.

Faults: stream resets, delays and split writes on every write (`SimStream`); partitions
(the connection between two nodes goes: each side's per-peer tasks are cancelled and
`PeerChange(up=False)` announced, open streams across the cut reset) and heal (a new
meeting, `PeerChange(up=True)`); crashes at any moment (the leader more often), every
task of the node's life cancelled and its Cortex closed, then a restart on the same
LMDB home (in-memory state lost, committed transactions kept); and kills right after a
Raft persist or a ledger apply commits (`ProcessKilled`, raised in the worker-thread
call: the write is durable, nothing the service does next happens).

Invariants (`service_sim_ledger_checks`, against a model of what clients asked and
were told, not the service's reading of it): every node's ledger is a prefix of one
common sequence; each node's chain verifies, and its Merkle root and every signed tree
head it holds match the root of the common sequence at that size (computed here, RFC
9162); every acknowledged append is on the ledger at its receipt's index, exactly once
(no client payload twice, even after retries across leader changes and nodes); nothing
is on the ledger that no client asked for; after healing every request commits and all
nodes reach the same size within bounded simulated time; no honest peer is scored, no
fork alarm is raised, and no task ends in anything but a gone stream or a timeout.
"""

from __future__ import annotations

import hashlib
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

import trio
import trio.testing
from service_sim import ServiceSimFailure, drive
from service_sim_ledger_checks import LedgerInvariants, Request
from service_sim_ledger_gate import LedgerGate, LedgerNode, LedgerStream
from service_sim_sov import ProcessKilled

from gd.genome.identity import NodeKey
from gd.ledger.entry import EntryKind, LedgerEntry
from gd.node.net.gate import PeerChange
from gd.node.net.streams import FramedStream, PeerTimeout, StreamGone
from gd.node.services.ledger_catchup import COMPACT_EVERY
from gd.node.services.ledger_control import LedgerServiceError
from gd.node.services.ledger_service import LedgerService
from gd.node.store.cortex import Cortex
from gd.protocol.errors import RemoteProtocolError

NODES: Final = 3
STEPS: Final = 24
# What a client waits for one commit before it retries (the control default is 10 s).
CLIENT_TIMEOUT_S: Final = 4.0
KINDS: Final = (EntryKind.DECISION, EntryKind.AGREEMENT, EntryKind.PROMOTION)
# After healing: how long every request may take to commit and every node to converge.
SETTLE_BOUND_S: Final = 60.0


class LedgerNet(LedgerInvariants):
    """Three voters, clients, the seeded random, the model, the trace and the nursery.
    The teeth tests subclass it (or patch the service) to break one invariant."""

    compact_rate = 0.35

    def __init__(self, seed: int, root: Path) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.root = root
        self.trace: list[str] = []
        self.faults = True
        self.reset_rate = 0.02
        self.delay_rate = 0.05
        self.corrupt_rate = 0.0
        self.kill_rate = 0.003
        # Compaction every few entries in `compact_rate` of the runs: snapshots are taken,
        # and a node that was down or cut off catches up from one (the daemon's default,
        # 10,000, is never reached by a run's few dozen entries). This found the proposer
        # never learning of statements a snapshot applied (seed 43, `Catchup.settle`).
        self.compact_every = self.rng.randint(3, 12) if self.compact_rate and \
            self.rng.random() < self.compact_rate else COMPACT_EVERY
        self.nodes = [LedgerNode(i, NodeKey.from_seed(hashlib.sha256(
            f"service-sim-ledger/{seed}/{i}".encode()).digest()), root / f"node{i}")
            for i in range(NODES)]
        self.cut: set[frozenset[int]] = set()
        self.nursery: trio.Nursery | None = None
        self.scopes: dict[int, list[trio.CancelScope]] = {i: [] for i in range(NODES)}
        # (node, peer) -> the scopes of the node's tasks in that peer's lifetime
        self.lifetimes: dict[tuple[int, int], list[trio.CancelScope]] = {}
        self.streams: list[LedgerStream] = []
        self.stats: Counter[str] = Counter()
        super().__init__()

    # -- plumbing ----------------------------------------------------------------------
    def log(self, text: str) -> None:
        self.trace.append(f"{trio.current_time():.6f} {text}")
        words = text.split()
        self.stats[" ".join(words[:2]) if words[0] == "fault" else words[0]] += 1

    def fail(self, text: str) -> NoReturn:
        raise ServiceSimFailure(f"FAILED SEED={self.seed}: {text}")

    def by_peer(self, peer: str) -> LedgerNode:
        return next(n for n in self.nodes if n.peer == peer)

    def connected(self, a: int, b: int) -> bool:
        return a != b and self.nodes[a].up and self.nodes[b].up and \
            frozenset((a, b)) not in self.cut

    def start(self, node: LedgerNode, fn: Callable[..., Any], *args: Any,
              peer: int | None = None) -> None:
        """Run `fn(*args)` in `node`'s current life (and `peer`'s lifetime, if named);
        what a dead life's code still does after its crash is not the node's."""
        scope, life = trio.CancelScope(), node.life
        self.scopes[node.index].append(scope)
        if peer is not None:
            self.lifetimes.setdefault((node.index, peer), []).append(scope)

        async def run() -> None:
            with scope:
                try:
                    await fn(*args)
                except (StreamGone, trio.TooSlowError, PeerTimeout):
                    pass
                except ServiceSimFailure:
                    raise
                except (ProcessKilled, BaseExceptionGroup) as exc:
                    killed, rest = (exc, None) if isinstance(exc, ProcessKilled) else \
                        exc.split(ProcessKilled)
                    if rest is not None or killed is None:
                        raise
                    if node.life == life and node.up:
                        self.log(f"killed {node.index}")
                        self.crash(node)
                except RemoteProtocolError as exc:
                    if node.life == life:
                        self.fail(f"node {node.index} refused an honest stream: {exc}")
                except Exception as exc:
                    if node.life == life and node.up:
                        self.fail(f"node {node.index}: a task failed: {exc!r}")

        assert self.nursery is not None
        self.nursery.start_soon(run)

    def serve(self, node: LedgerNode, handler: Callable[..., Any], stream: LedgerStream,
              dialer: LedgerNode) -> None:
        assert node.gate is not None
        rec = node.gate.record(dialer.peer)
        self.start(node, handler, FramedStream(stream), rec, peer=dialer.index)

    def end_lifetime(self, node: int, peer: int) -> None:
        """`node`'s connection to `peer` is gone: its work for that peer is cancelled and
        its services hear of it, as the gate's `connection_closed` does."""
        for scope in self.lifetimes.pop((node, peer), []):
            scope.cancel()
        gate = self.nodes[node].gate
        if gate is not None:
            for listener in gate.listeners:
                listener(PeerChange(self.nodes[peer].peer, False))

    def meet(self, a: int, b: int) -> None:
        for x, y in ((a, b), (b, a)):
            gate = self.nodes[x].gate
            assert gate is not None
            for listener in gate.listeners:
                listener(PeerChange(self.nodes[y].peer, True))

    def reset_streams(self, pair: frozenset[int] | None = None) -> None:
        keep = []
        for stream in self.streams:
            if pair is None or frozenset((stream.src, stream.dst)) == pair:
                for end in (stream, stream.other):
                    if end is not None:
                        end.end.send_stream.close()
                        end.end.receive_stream.close()
            else:
                keep.append(stream)
        self.streams = keep

    # -- lives -------------------------------------------------------------------------
    def open(self, node: LedgerNode) -> None:
        """Build the node's ledger service over its LMDB home, as the daemon does."""
        node.life += 1
        node.cortex = Cortex.open(node.path)
        node.gate = LedgerGate(self, node)
        node.svc = self.build(node)
        self.start(node, node.svc.run)

    def build(self, node: LedgerNode) -> LedgerService:
        assert node.gate is not None
        svc = LedgerService(node.gate, node.cortex,  # type: ignore[arg-type]
                            seed=self.rng.getrandbits(32), compact_every=self.compact_every)
        assert svc.storage is not None
        svc.storage.save = self.killing(svc.storage.save)  # type: ignore[method-assign]
        svc.ledger.append_batch = self.killing(  # type: ignore[method-assign]
            svc.ledger.append_batch)
        return svc

    def killing(self, write: Callable[..., Any]) -> Callable[..., Any]:
        """`write`, after which the process now and then dies (`ProcessKilled`): right
        after a Raft persist or a ledger apply committed, before the service does
        anything with it (send, advance, wake the waiting clients)."""
        def run(*args: Any, **kwargs: Any) -> Any:
            out = write(*args, **kwargs)
            if self.faults and self.rng.random() < self.kill_rate:
                raise ProcessKilled
            return out

        return run

    def crash(self, node: LedgerNode) -> None:
        for other in self.nodes:
            if self.connected(node.index, other.index):
                self.end_lifetime(other.index, node.index)
        for scope in self.scopes[node.index]:
            scope.cancel()
        self.scopes[node.index] = []
        for key in [k for k in self.lifetimes if node.index in k]:
            del self.lifetimes[key]
        self.streams = [s for s in self.streams if node.index not in (s.src, s.dst)]
        assert node.cortex is not None
        node.cortex.close()
        node.cortex = node.gate = node.svc = None
        node.methods = {}
        self.log(f"crash {node.index}")

    def restart(self, node: LedgerNode) -> None:
        self.open(node)
        self.log(f"restart {node.index}")
        for other in self.nodes:
            if self.connected(node.index, other.index):
                self.meet(node.index, other.index)

    def partition(self, alone: int) -> None:
        for other in range(NODES):
            pair = frozenset((alone, other))
            if other != alone and pair not in self.cut:
                was = self.connected(alone, other)
                self.cut.add(pair)
                self.reset_streams(pair)
                if was:
                    self.end_lifetime(alone, other)
                    self.end_lifetime(other, alone)
        self.log(f"partition {alone}")

    def heal(self) -> None:
        cut, self.cut = self.cut, set()
        for pair in sorted(cut, key=sorted):
            a, b = sorted(pair)
            if self.connected(a, b):
                self.meet(a, b)
        self.log("heal")

    def leader(self) -> LedgerNode | None:
        for node in self.nodes:
            if node.svc is not None and node.svc.node is not None and \
                    node.svc.node.is_leader:
                return node
        return None

    # -- clients -----------------------------------------------------------------------
    def new_request(self) -> Request:
        number = len(self.requests)
        author = self.rng.randrange(NODES)
        kind = self.rng.choice(KINDS)
        payload = hashlib.sha256(f"{self.seed}/{number}".encode()).digest()
        presigned = self.rng.random() < 0.3
        request = Request(number, author, str(kind), payload, f"req-{number}", presigned)
        if presigned:  # the recorder's route: the statement is signed once, then retried
            key = self.nodes[author].key
            request.statement = LedgerEntry.create(key, kind, 1_000 + number, payload,
                                                   {"n": number}, request.key)
        self.requests.append(request)
        return request

    async def client(self, request: Request, via: LedgerNode) -> None:
        """One attempt of `request` at `via` (its author, or any node for a pre-signed
        statement); an acknowledgement goes into the model."""
        if not via.up:
            return
        life = via.life
        request.attempts += 1
        self.log(f"append {request.number} via {via.index} try {request.attempts}")
        try:
            if request.statement is not None:
                plain = (await via.methods["ledger_submit"](
                    [request.statement.encode()], timeout_s=CLIENT_TIMEOUT_S))[0]
            else:
                plain = await via.methods["ledger_append"](
                    request.kind, request.payload, {"n": request.number}, request.key,
                    timeout_s=CLIENT_TIMEOUT_S)
        except (LedgerServiceError, ValueError) as exc:
            self.log(f"refused {request.number} via {via.index}: {str(exc)[:60]}")
            return
        if via.life != life:
            return  # the answer of a dead life reaches no client
        self.acknowledged(request, plain)
        self.log(f"ack {request.number} {plain['status']} index {plain['index']}")

    def send(self, request: Request, *, anywhere: bool = False) -> None:
        candidates = [n for n in self.nodes if n.up]
        via = self.nodes[request.author]
        if request.statement is not None and (anywhere or not via.up) and candidates:
            via = self.rng.choice(candidates)
        if via.up:
            self.start(via, self.client, request, via)

    # -- the run -----------------------------------------------------------------------
    async def step(self) -> None:
        await trio.sleep(self.rng.uniform(0.0, 1.5))
        down = [n for n in self.nodes if not n.up]
        if len(down) > 1 or (down and self.rng.random() < 0.4):
            self.restart(self.rng.choice(down))
            return
        event = self.rng.choices(("append", "retry", "crash", "partition", "heal"),
                                 (8, 3, 1, 1, 1))[0]
        if event == "append":
            for _ in range(self.rng.randint(1, 3)):
                self.send(self.new_request())
        elif event == "retry":
            waiting = [r for r in self.requests if r.receipt is None]
            if waiting:
                self.send(self.rng.choice(waiting), anywhere=True)
        elif event == "crash":
            leader = self.leader()
            up = [n for n in self.nodes if n.up]
            victim = leader if leader is not None and self.rng.random() < 0.6 else \
                self.rng.choice(up)
            if victim is leader:
                self.log(f"crash-leader {victim.index}")
            self.crash(victim)
        elif event == "partition" and not self.cut:
            self.partition(self.rng.randrange(NODES))
        elif event == "heal" and self.cut:
            self.heal()
        self.check_prefix()

    async def main(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            for node in self.nodes:
                self.open(node)
            for a in range(NODES):
                for b in range(a + 1, NODES):
                    self.meet(a, b)
            for _ in range(STEPS):
                await self.step()
            await self.settle()
            nursery.cancel_scope.cancel()

    async def settle(self) -> None:
        """Faults stop, the cut heals, every node runs: each request is retried until
        acknowledged and all ledgers reach one size, within `SETTLE_BOUND_S`."""
        self.faults = False
        if self.cut:
            self.heal()
        for node in self.nodes:
            if not node.up:
                self.restart(node)
        self.log("settle")
        deadline = trio.current_time() + SETTLE_BOUND_S
        resend = trio.current_time()
        while trio.current_time() < deadline:
            if trio.current_time() >= resend:  # each client retries once its try ended
                for request in self.requests:
                    if request.receipt is None:
                        self.send(request)
                resend = trio.current_time() + CLIENT_TIMEOUT_S + 0.5
            await trio.sleep(0.5)
            self.check_prefix()
            if all(r.receipt is not None for r in self.requests) and self.converged():
                break
        self.check_final()
        self.log(f"settled {sorted(self.stats.items())}")


class CompactingNet(LedgerNet):
    """Compaction every 3-12 entries in every run (snapshot install and restore under
    faults), for hunting snapshot bugs; the default net compacts in 35 % of the runs."""

    compact_rate = 1.0


@dataclass(frozen=True)
class LedgerSimResult:
    seed: int
    trace_hash: str
    trace: list[str]
    stats: Counter[str]
    size: int


def run(seed: int, root: Path, net_class: type[LedgerNet] = LedgerNet) -> LedgerSimResult:
    """One seeded run under `root`; `ServiceSimFailure` when an invariant breaks."""
    net = net_class(seed, root)
    drive(net, seed, stores_on_mock_clock=True)
    digest = hashlib.sha256("\n".join(net.trace).encode()).hexdigest()
    return LedgerSimResult(seed, digest, net.trace, net.stats, len(net.common))


def run_seed(seed: int, net_class: type[LedgerNet] = LedgerNet) -> LedgerSimResult:
    """`run` in a scratch directory of its own (tmpfs when there is one)."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as scratch:
        return run(seed, Path(scratch), net_class)


def main(argv: list[str]) -> int:
    """`python tests/sim/service_sim_ledger.py [--compact] [FIRST [COUNT]]`: seeds,
    failures, CPU per seed (`--compact`: `CompactingNet`). A run follows the process's
    string-hash seed too: set PYTHONHASHSEED to replay one (sweep.py sets 0)."""
    net_class = LedgerNet
    if argv and argv[0] == "--compact":
        net_class, argv = CompactingNet, argv[1:]
    first = int(argv[0]) if argv else 0
    count = int(argv[1]) if len(argv) > 1 else 50
    failed = 0
    cpu = time.process_time()
    for seed in range(first, first + count):
        try:
            run_seed(seed, net_class)
        except ServiceSimFailure as exc:
            failed += 1
            print(exc, flush=True)
    spent = time.process_time() - cpu
    print(f"{count} seeds from {first}: {failed} failed, {spent / count:.3f} CPU s/seed",
          flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
