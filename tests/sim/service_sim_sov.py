"""The real sync *and sovereignty* services of three organisations, in-process on trio's
mock clock, over a simulated gate and faulty streams; one seed gives one run, bit for bit.

Why: `service_sim` runs the async sync drivers between two nodes that share everything
(`share_all`). Sovereignty is where a bug costs an organisation its know-how, so this
harness runs the daemon's `SovereigntyService` beside each node's `SyncService`, built
exactly as the daemon builds them (no `share_policy`: enforcement on): agreements travel
over `/gd/agreements` when a peer is met and whenever the audit log grows, sync batches
and repair fetches go through the sovereign views, received genes land
`adaptation_pending`, every gene in or out is audited, agreements and revocations go to
the node's ledger (the recorder's direct route: a region of one). Organisations share a
domain with each other (some shares anonymised) and revoke it, while the network drops,
delays, cuts and replays streams, partitions heal, and nodes crash and restart (a
restart reopens the node's real LMDB home and rebuilds every service).

Faults, on top of `service_sim`'s (split writes, delays, resets, crashes mid-round):

* **drop**: a write is lost and its stream stalls (what a lost segment does to a TCP
  stream until a timer gives up): the reader times out (`READ_TIMEOUT_S`);
* **duplicate / reorder**: an agreements conversation is replayed to the receiver
  later, after newer ones (the daemon re-delivers an outbox whose ack was lost, so a
  proposal does arrive twice and late: a late share must never undo a revoke);
* **partition / heal**: streams across the cut stall and new ones fail; healing meets the
  peers again (every connection is a new meeting: `PeerChange(up=True)`);
* **pause**: a writer is descheduled right after its bytes leave, so a crash can land
  between a send and what the sender does next (its audit records, its outbox);
* **crash / restart**: every task of the node's life is cancelled and its Cortex
  closed; code of a dead life that still runs (a `finally`) cannot touch the new life.
  `ProcessKilled`, raised right after a received batch's apply commits (inside the
  worker-thread call), is a kill at that exact point, where no await lets a crash in.

Invariants (an independent model of each organisation's own rules and of the newest
proposal each node has received from each peer, not the stores' reading of them):

1. a gene of domain D is sent from A to B only while A's own rule lets B have D and the
   newest proposal A has received from B for D is a share (never after A knew of B's
   revoke); it is accepted by B only if B's own rule let A send D at some moment of that
   conversation; nothing is forwarded (origin is always the sender);
2. a gene sent under an anonymising rule carries none of the original's identity (id,
   name, purpose, text parameters); one sent in clear is the original;
3. every received gene is `adaptation_pending` (or `revoked`, after a revoke of its
   origin for its domain arrived);
4. every received gene has a `gene_received` record at the receiver and a `gene_sent`
   record at the sender, both audit chains verify, every revoke is on the node's ledger,
   and so is every agreement in force at the end;
5. after healing, every domain both sides agree on has converged (the receiver holds
   each of the origin's genes, or its derived form).
"""

from __future__ import annotations

import hashlib
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, Final, NoReturn

import trio
import trio.testing
from service_sim import EPOCH_MS, ServiceSimFailure, SimStream, drive
from service_sim_sov_checks import Pair, SovInvariants
from service_sim_sov_parts import (
    CheckedReceiver,
    CheckedSender,
    ObservedPolicyStore,
    ProcessKilled,
    SovGate,
    SovNode,
    SovSimResult,
    SovStream,
)

from gd.crdt import hlc
from gd.genome.gene import Codon, Gene, ShareScope
from gd.genome.identity import NodeKey
from gd.node.config_sections import SyncSettings
from gd.node.net.gate import PeerChange
from gd.node.net.streams import READ_TIMEOUT_S, FramedStream, PeerTimeout, StreamGone
from gd.node.services.sovereignty_service import SovereigntyService
from gd.node.services.sync_repair import REPAIR_READ_TIMEOUT_S
from gd.node.services.sync_service import SyncService
from gd.node.services.verify_pool import VerifyPool
from gd.node.store.cortex import Cortex
from gd.node.store.sync_store import any_content
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.policy_rules import ShareRule, Subject, SubjectKind
from gd.protocol.sovereignty_agreements import ProposalKind

NODES: Final = 3
STEPS: Final = 60
DOMAINS: Final = ("turbofan", "loan")
# Settling: each round every ordered pair delivers its outbox, pulls and reconciles.
SETTLE_ROUNDS: Final = 4


class SovNet(SovInvariants):
    """Three organisations, the seeded random, the model, the trace, and the nursery.
    The teeth tests subclass it with a broken store or view (the class attributes)."""

    policy_store_class: type[ObservedPolicyStore] = ObservedPolicyStore
    sender_class: type[CheckedSender] = CheckedSender
    receiver_class: type[CheckedReceiver] = CheckedReceiver
    # `[domains.<name>]` of each node's config (`service_sim_fed`: a last-writer-wins one)
    domain_settings: ClassVar[dict[str, Any]] = {}
    steps: int = STEPS

    def __init__(self, seed: int, root: Path) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.root = root
        self.trace: list[str] = []
        self.faults = True
        self.reset_rate = 0.03
        self.delay_rate = 0.08
        self.drop_rate = 0.02
        self.replay_rate = 0.3
        self.pause_rate = 0.2
        self.kill_rate = 0.05
        self.corrupt_rate = 0.0
        self.nodes = self.make_nodes()
        count = len(self.nodes)
        self.groups: dict[int, int] = {}
        self.nursery: trio.Nursery | None = None
        self.scopes: dict[int, list[trio.CancelScope]] = {i: [] for i in range(count)}
        pairs = [(a, b, d) for a in range(count) for b in range(count) if a != b
                 for d in DOMAINS]
        # The model: each org's own allow rules now (and when they changed), fixed per
        # pair: anonymised or not, by peer id or by org; what each node knows of each peer.
        self.allow: dict[Pair, bool] = dict.fromkeys(pairs, False)
        self.history: dict[Pair, list[tuple[float, bool]]] = {p: [] for p in pairs}
        self.anon = {p: self.rng.random() < 0.4 for p in pairs}
        self.by_org = {p: self.rng.random() < 0.5 for p in pairs}
        self.known: dict[Pair, tuple[int, ProposalKind]] = {}
        self.learned_at: dict[Pair, float] = {}
        self.derived: dict[tuple[int, bytes], tuple[bytes, Gene]] = {}
        self.revoke_heard: set[Pair] = set()
        self.revokes = [0] * count
        self.stats: Counter[str] = Counter()

    def make_nodes(self) -> list[SovNode]:
        """Three organisations of one region, in step with the clock (the fed sim's
        `service_sim_fed_rules` draws regions, a shared org and clock skew)."""
        return [SovNode(i, NodeKey.from_seed(hashlib.sha256(
            f"service-sim-sov/{self.seed}/{i}".encode()).digest()), f"org{i}",
            self.root / f"node{i}") for i in range(NODES)]

    # -- plumbing ----------------------------------------------------------------------
    def log(self, text: str) -> None:
        self.trace.append(f"{trio.current_time():.6f} {text}")
        words = text.split()
        self.stats[" ".join(words[:2]) if words[0] == "fault" else words[0]] += 1

    def fail(self, text: str) -> NoReturn:
        raise ServiceSimFailure(f"FAILED SEED={self.seed}: {text}")

    def by_peer(self, peer: str) -> SovNode:
        return next(n for n in self.nodes if n.peer == peer)

    def linked(self, a: int, b: int) -> bool:
        return self.groups.get(a, 0) == self.groups.get(b, 0)

    def tick(self, node: SovNode) -> int:
        node.last_hlc = max(node.last_hlc + 1, hlc.pack(
            EPOCH_MS + node.skew_ms + int(trio.current_time() * 1000), 0))
        return node.last_hlc

    def scope(self, node: SovNode) -> trio.CancelScope:
        scope = trio.CancelScope()
        self.scopes[node.index].append(scope)
        return scope

    def start(self, node: SovNode, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` in `node`'s current life; a crash cancels it, and whatever a
        dead life's code still does (its `finally` on a closed Cortex) is not the node's."""
        scope, life = self.scope(node), node.life

        async def run() -> None:
            with scope:
                try:
                    await fn(*args)
                except (StreamGone, trio.TooSlowError):
                    pass
                except ServiceSimFailure:
                    raise
                except ProcessKilled:
                    if node.life == life and node.up:
                        self.log(f"killed {node.index}")
                        self.crash(node)
                except Exception as exc:
                    if node.life == life:
                        self.fail(f"node {node.index}: a task failed: {exc!r}")

        assert self.nursery is not None
        self.nursery.start_soon(run)

    def serve(self, node: SovNode, handler: Callable[..., Any], stream: SimStream,
              remote: str) -> None:
        async def handle() -> None:
            try:
                await handler(FramedStream(stream), SimpleNamespace(peer_id=remote))
            except PeerTimeout:
                pass
            except RemoteProtocolError as exc:
                self.fail(f"node {node.index} refused an honest stream: {exc}")

        self.start(node, handle)

    def replay_later(self, src: SovNode, dst: SovNode, protocol: str,
                     data: list[bytes]) -> None:
        """The network hands `dst` a conversation again, later (duplicate, reordered)."""
        delay = self.rng.uniform(0.5, 40.0)
        blob = b"".join(data)
        self.log(f"fault replay {src.index}->{dst.index} in {delay:.3f}")

        async def replay() -> None:
            await trio.sleep(delay)
            if dst.gate is None or not self.linked(src.index, dst.index):
                return
            a, b = trio.testing.memory_stream_pair()
            theirs = SovStream(b, src.peer, self, dst.index, src.index)
            self.serve(dst, dst.gate.handlers[protocol], theirs, src.peer)
            self.log(f"replayed {src.index}->{dst.index} bytes={len(blob)}")
            await a.send_all(blob)
            with trio.move_on_after(READ_TIMEOUT_S / 2):
                while await a.receive_some(65536):
                    pass
            await a.aclose()

        assert self.nursery is not None
        self.nursery.start_soon(replay)

    # -- lives -------------------------------------------------------------------------
    def open(self, node: SovNode) -> None:
        """Build the node's services over its LMDB home, as the daemon does."""
        node.life += 1
        node.cortex = Cortex.open(node.path)
        node.gate = gate = SovGate(self, node)
        sync = SyncService(gate, node.cortex,  # type: ignore[arg-type]
                           settings=SyncSettings(auto=False,
                                                 compress=self.rng.random() < 0.5,
                                                 batch_genes=self.rng.randint(1, 8)))
        sync.store.content_check = any_content  # synthetic genes: no domain pack check
        sync.verify_pool = VerifyPool(workers=1)
        sync.store.apply_batches = self.killing(sync.store.apply_batches)
        sync.store.apply_batch = self.killing(sync.store.apply_batch)
        sov = SovereigntyService(gate, node.cortex, sync)  # type: ignore[arg-type]
        sov.store = self.policy_store_class(sov.store, self, node)  # type: ignore[assignment]
        sync.set_view_factories(
            lambda peer: self.sender_class(sov.sender_view(peer),
                                           lambda g: self.check_send(node, peer, g),
                                           lambda items: self.check_items(node, peer, items)),
            lambda peer: self.receiver_class(
                sov.receiver_view(peer), lambda g, t: self.check_accept(node, peer, g, t),
                lambda g, t: self.check_refused(node, peer, g, t)))
        node.sync, node.sov = sync, sov
        self.start(node, sov.run)

    def killing(self, apply: Callable[..., Any]) -> Callable[..., Any]:
        """`apply`, after which the process now and then dies (`ProcessKilled`): right
        after a received batch's transaction committed, before anything else."""
        def run(*args: Any, **kwargs: Any) -> Any:
            out = apply(*args, **kwargs)
            if self.faults and self.rng.random() < self.kill_rate:
                raise ProcessKilled
            return out

        return run

    def meet(self, a: SovNode, b: SovNode) -> None:
        """A new connection between `a` and `b`: each gate announces the other."""
        for x, y in ((a, b), (b, a)):
            assert x.gate is not None
            for listener in x.gate.listeners:
                listener(PeerChange(y.peer, True))

    def crash(self, node: SovNode) -> None:
        for scope in self.scopes[node.index]:
            scope.cancel()
        self.scopes[node.index] = []
        assert node.cortex is not None
        node.cortex.close()
        node.cortex = node.gate = node.sync = node.sov = None
        self.log(f"crash {node.index}")

    def restart(self, node: SovNode) -> None:
        self.open(node)
        self.log(f"restart {node.index}")
        assert node.sov is not None
        report = node.sov.audit.verify()  # what the crash left must still chain
        if not report.ok:
            self.fail(f"node {node.index} audit log after a crash: {report.reason}")
        for other in self.nodes:
            if other is not node and other.up and self.linked(node.index, other.index):
                self.meet(node, other)

    # -- actions ---------------------------------------------------------------------------
    def subject(self, pair: Pair) -> Subject:
        to = self.nodes[pair[1]]
        return Subject(SubjectKind.ORG, to.org) if self.by_org[pair] else \
            Subject(SubjectKind.PEER, to.peer)

    def rule(self, pair: Pair) -> ShareRule:
        """The allow rule the pair's organisation makes (`service_sim_fed` lets it
        forward)."""
        return ShareRule(self.subject(pair), pair[2], anonymize=self.anon[pair])

    def share(self, node: SovNode, pair: Pair) -> None:
        assert node.sov is not None
        rule = self.rule(pair)
        self.allow[pair] = True
        self.history[pair].append((trio.current_time(), True))
        node.sov.store.share(rule, ledger=node.sov.ledger, hlc=self.tick(node))
        self.log(f"share {pair} anon={self.anon[pair]}")

    def revoke(self, node: SovNode, pair: Pair) -> None:
        assert node.sov is not None
        self.allow[pair] = False
        self.history[pair].append((trio.current_time(), False))
        removed = node.sov.store.revoke(self.subject(pair), pair[2], ledger=node.sov.ledger,
                                        hlc=self.tick(node))
        if not removed:
            self.fail(f"node {node.index}: revoking {pair} removed no rule")
        self.revokes[node.index] += 1
        self.log(f"revoke {pair}")

    def write(self, node: SovNode, domain: str | None = None) -> Gene:
        """A new gene of `node`'s own (of `domain`, or one drawn from the seed)."""
        assert node.cortex is not None
        serial = f"{node.index}-{len(node.written):05d}"
        gene = Gene.create(node.key, domain=domain or self.rng.choice(DOMAINS),
                           name=f"secret-rule-{serial}",
                           codons=[Codon.simple("s11", ">", self.rng.randint(0, 99))],
                           action="inspect", purpose=f"private-purpose-{serial}",
                           params={"note": f"tenant-{serial}"}, hlc=self.tick(node),
                           scope=self.new_scope(node))
        node.cortex.put_gene(gene)
        node.written.append(gene)
        self.log(f"write {node.index} {gene.id[:8]} {gene.domain}")
        return gene

    def new_scope(self, node: SovNode) -> ShareScope:
        """A new gene's scope: never forwardable here (`service_sim_fed` draws one)."""
        return ShareScope()

    async def round(self, node: SovNode, other: SovNode, reconcile: bool) -> None:
        """One pull (and maybe a reconcile) through `guard_round`, as the peer loop runs."""
        sync = node.sync
        assert sync is not None
        errors: list[str] = []
        stats = await sync.guard_round(other.peer, "pull", sync.pull(other.peer), errors)
        if stats is not None and reconcile:
            stats = await sync.guard_round(other.peer, "reconcile",
                                           sync.reconcile(other.peer), errors)
        got = "-" if stats is None else f"{stats.genes_in}/{stats.batches}/{stats.repaired}"
        self.log(f"round {node.index}<-{other.index} in/batches/repaired={got} "
                 f"errors={len(errors)}")

    async def step(self) -> None:
        rng = self.rng
        await trio.sleep(rng.uniform(0.0, 2.0))
        up = [n for n in self.nodes if n.up]
        down = [n for n in self.nodes if not n.up]
        events = ("write", "sync", "share", "revoke", "crash", "restart", "partition",
                  "heal")
        weights = (3, 6, 1.5, 1.0, 0.5 if len(up) > 1 else 0, 3 if down else 0,
                   0.3, 1 if self.groups else 0)
        event = rng.choices(events, weights)[0]
        if event == "restart":
            self.restart(rng.choice(down))
            return
        if event == "partition":
            self.groups = {n.index: rng.randrange(2) for n in self.nodes}
            self.log(f"partition {sorted(self.groups.items())}")
            return
        if event == "heal":
            cut = [(a, b) for a in self.nodes for b in self.nodes
                   if a.index < b.index and not self.linked(a.index, b.index)]
            self.groups = {}
            self.log("heal")
            for a, b in cut:
                if a.up and b.up:
                    self.meet(a, b)
            return
        if not up:
            return
        node = rng.choice(up)
        if event == "crash":
            self.crash(node)
        elif event == "write":
            self.write(node)
        elif event in ("share", "revoke"):
            want = event == "revoke"
            pairs = [p for p in self.allow if p[0] == node.index and self.allow[p] == want]
            if pairs:
                pair = rng.choice(pairs)
                (self.revoke if want else self.share)(node, pair)
        elif event == "sync":
            other = rng.choice([n for n in self.nodes if n is not node])
            reconcile = rng.random() < 0.3
            if rng.random() < 0.25:  # crash the puller or the server mid-round
                self.start(node, self.round, node, other, reconcile)
                await trio.sleep(rng.uniform(0.0, 0.05))
                victim = rng.choice((node, other))
                if victim.up:
                    self.log(f"crash-mid-round {victim.index}")
                    self.crash(victim)
            else:
                self.start(node, self.round, node, other, reconcile)
                await trio.sleep(rng.uniform(0.0, 1.0))
        self.check_statuses()

    # -- the run -----------------------------------------------------------------------------
    async def main(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            for node in self.nodes:
                self.open(node)
            for pair in self.allow:  # some agreements exist before the peers meet
                if self.rng.random() < 0.5:
                    self.share(self.nodes[pair[0]], pair)
            for a in self.nodes:
                for b in self.nodes:
                    if a.index < b.index:
                        self.meet(a, b)
            for _ in range(self.steps):
                await self.step()
            await self.settle()
            nursery.cancel_scope.cancel()

    async def settle(self) -> None:
        self.faults = False
        self.groups = {}
        await trio.sleep(REPAIR_READ_TIMEOUT_S + READ_TIMEOUT_S + 45)  # cut streams, replays
        for node in self.nodes:
            if not node.up:
                self.restart(node)
        self.log("settle")
        for _ in range(SETTLE_ROUNDS):
            await self.settle_round()
        self.final_checks()
        self.log(f"settled {sorted(self.stats.items())}")

    async def settle_round(self) -> None:
        """Every ordered pair delivers its outbox, pulls and reconciles, fault-free."""
        for a in self.nodes:
            for b in self.nodes:
                if a is not b:
                    assert a.sov is not None
                    await a.sov.guard_delivery(b.peer, a.sov.deliver(b.peer))
                    await self.round(a, b, reconcile=True)
        await trio.sleep(READ_TIMEOUT_S)  # the backfills deliveries started


def run(seed: int, root: Path, net_class: type[SovNet] = SovNet) -> SovSimResult:
    """One seeded run under `root`; `ServiceSimFailure` when an invariant breaks."""
    net = net_class(seed, root)
    drive(net, seed, stores_on_mock_clock=True)
    digest = hashlib.sha256("\n".join(net.trace).encode()).hexdigest()
    return SovSimResult(seed, digest, net.trace, net.stats)


def run_seed(seed: int) -> SovSimResult:
    """`run` in a scratch directory of its own (on /dev/shm when there is one: an LMDB
    commit's msync is most of a seed's cost on disk): what a sweep runner calls."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as scratch:
        return run(seed, Path(scratch))


def main(argv: list[str]) -> int:
    """`python tests/sim/service_sim_sov.py [FIRST [COUNT]]`: a sweep of seeds (under
    /dev/shm when there is one: an LMDB commit's msync is the cost of a seed), one line
    per failing seed and a summary; exit status 1 if any seed failed."""
    first = int(argv[0]) if argv else 0
    count = int(argv[1]) if len(argv) > 1 else 100
    failed = 0
    started = time.monotonic()
    for seed in range(first, first + count):
        try:
            run_seed(seed)
        except ServiceSimFailure as exc:
            failed += 1
            print(exc, flush=True)
    spent = time.monotonic() - started
    print(f"{count} seeds from {first}: {failed} failed, {spent / count:.3f} s/seed",
          flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
