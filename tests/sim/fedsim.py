"""A deterministic simulation of the federation: N nodes running the daemon's own sync
and sovereignty code on one seed.

Every node is real where it matters: an LMDB `Cortex` in its own directory, the
`SyncStore` (feed reader, batch applier, conflict queue), the `PolicyStore` with its
hash-chained `AuditLog`, an `AdaptationDesk` and the tombstone `ForgetOutbox`. The
conversations are the daemon's, not a copy (issue 12 item 6): `Handshake`; the pull
round (`PullRound` on the dialling side, `answer_pull` through the daemon's
`SovereignSenderView` and `feed_policy` on the serving side, `SovereignReceiverView`
behind the receiver, batches staged and committed in groups by the daemon's
`GroupCommit`); repair (`RepairRound`, `answer_step`, `check_versions`, the daemon's
`Repairer.items` / `Repairer.versions`, fetches pipelined as `repair_fetch.fetch_all`
does); agreements (`delivery_frames`, `check_ack`, `AgreementDelivery.take_proposals` /
`take_tombstones`). Each frame is the wire message the daemon sends (`encode_frame` /
`decode_frame`). `fedsim_services` gives those methods the service object they read
their stores from. What is simulated is what the async drivers, the gate and libp2p
supply: the network (frames in flight, delivered by a scheduler that draws the next
event from one `random.Random(seed)`), each connection's stream guarantees (in order, no
duplicates: `Simulation.deliver`), the clocks, and *when* each conversation starts. The
drivers' sequencing itself (`FeedPuller.pull`'s loop, `fetch_all`'s window,
`AgreementDelivery.deliver`'s one-frame-per-ack, `_meet` and `backfill`) is re-stated
here, a few lines each, because those drivers are trio code; `service_sim_sov.py` runs
them for real on trio's mock clock. Two differences remain: agreement deliveries ride
the simulated sync connection (the daemon opens a /gd/agreements stream), and only the
dialling end starts a backfill round.

Faults: drop, duplicate, reorder (any in-flight frame may be delivered next), delay
(a frame held back for a while), partition and heal, crash and restart. On a connection
they do what they do to a TCP stream: a duplicate is discarded, a frame that overtook an
earlier one waits for it, a lost frame stalls the connection until its timer abandons it
(frames of different connections, and of a dead connection, still race freely). A crash
throws away a node's in-memory state (connections, rounds, the peers it met) and keeps
its Cortex, which is what a committed LMDB transaction guarantees; a restart rebuilds
every object from the Cortex and its checkpoints.

Invariants, checked after every step (see docs/simulation.md):

* every acknowledged local gene write is still in its origin's Cortex;
* nothing reaches a peer outside the sender's policy at the moment of sending: every
  batch, repair reply and reconciliation message is decoded from its bytes and checked
  against an oracle over the harness's own model of each node's rules (not the cores'
  code), and anonymised fields never appear in clear in the bytes (a reconciliation
  message may also name heads the receiver authored: it holds them already);
* nothing is applied that the receiver's own rules refuse, and nothing is refused
  without a reason: the receiver's rules, its record of the sender's consent, or the
  gene being its own;
* a received gene is never `native` without an approval;
* every audit log's hash chain verifies (incrementally each step, fully at the end).

After the run everything heals and restarts, sync runs to quiescence, and every gene
that may flow from one node to another is accounted for at the receiver (the same
version, a descendant, a queued conflict, or an LWW loss where the domain is LWW);
pairs that share a gene both ways with no conflict pending hold the same version; a
conflict resolved on one node settles the same conflict on every node its resolution
reaches (no queued pair that the resolution descends from is left); each node's view of
its peers' consent matches what the peers actually agreed.

A failure raises `SimFailure("FAILED SEED=<seed> ...")`; `run(seed)` replays it exactly
(`SimResult.trace_hash` is the SHA-256 of the whole event trace).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from fedsim_services import CheckedReceiverView, SimPolicyStore, SovereigntySide, SyncSide

from gd.crdt.conflict import QUEUE_ALL, ConflictPolicy, VersionStamp
from gd.crdt.hlc import HLC
from gd.crdt.vclock import Order, compare, descends
from gd.genome import canonical
from gd.genome.gene import Codon, Gene, GeneStatus, ShareScope
from gd.genome.identity import NodeKey
from gd.node.app.adaptation import AdaptationDesk
from gd.node.services.repair_fetch import FETCH_WINDOW
from gd.node.services.sync_group import AuditIn, GroupCommit, StagedBatch, commit_audited
from gd.node.services.sync_serve import feed_policy
from gd.node.services.sync_views import ReceiverView, SenderView
from gd.node.store.audit import AUDIT_DB, GENESIS, AuditLog, MemoryLedgerSink, chain_hash
from gd.node.store.cortex import Cortex
from gd.node.store.policy_store import PolicyStore
from gd.node.store.sync_store import ApplyStats, SyncStore, any_content, resolve_conflict
from gd.protocol.agreement_messages import (
    DeliveryAck,
    ForgetDelivery,
    ProposalDelivery,
    check_ack,
    delivery_frames,
)
from gd.protocol.errors import ProtocolError, RemoteProtocolError
from gd.protocol.handshake import Handshake, HandshakeOffer
from gd.protocol.policy_rules import (
    Direction,
    Effect,
    PeerInfo,
    ResidencyRule,
    ShareRule,
    Subject,
    SubjectKind,
)
from gd.protocol.reconcile import Reconciler
from gd.protocol.reconcile_messages import Mode
from gd.protocol.repair import RepairRound, answer_step, check_versions
from gd.protocol.sovereignty_anonymise import anonymisation_secret, derived_id, peer_key
from gd.protocol.sync import RejectedGene, SyncReceiver, SyncSender
from gd.protocol.sync_frames import (
    MAX_FETCH_HASHES,
    FetchVersions,
    ReconcileEnd,
    ReconcileStep,
    SyncBatch,
    SyncPull,
    Versions,
    decode_wire_genes,
    decompress,
)
from gd.protocol.sync_round import PullRound, answer_pull
from gd.protocol.wire import Message, decode_frame, encode_frame

DOMAINS: Final = ("turbofan", "loans", "grid")
# "grid" is configured last-writer-wins; the others queue every concurrent edit.
LWW_DOMAINS: Final = frozenset({"grid"})
REGIONS: Final = ("eu", "us")
ACTIONS: Final = ("inspect", "overhaul", "hold")
EPOCH_MS: Final = 1_700_000_000_000
# Node clocks differ by up to this much: well inside the handshake's 5-minute skew limit
# and the HLC's 60 s drift limit, so skew alone never refuses a peer.
MAX_SKEW_MS: Final = 2_000
# A connection nobody finished within this much simulated time is abandoned.
CONN_TIMEOUT_MS: Final = 4_000
# Repair fetches ask for at most this many versions (the daemon's MAX_FETCH_HASHES).
MAX_FETCH: Final = 256
# End-of-run sync rounds: each round every ordered pair pulls and reconciles; real
# quiescence needs 2-4, more than this means the system does not settle.
MAX_QUIESCENCE_ROUNDS: Final = 12


class SimFailure(AssertionError):
    """An invariant broke. The message starts with ``FAILED SEED=<seed>``."""


@dataclass(frozen=True)
class FedConfig:
    """Rates are per-step probabilities of drawing each kind of event."""

    steps: int = 300
    min_nodes: int = 3
    max_nodes: int = 5
    deliver: float = 0.50
    drop: float = 0.04
    duplicate: float = 0.04
    delay: float = 0.03
    partition: float = 0.015
    heal: float = 0.03
    crash: float = 0.01
    restart: float = 0.08
    create: float = 0.05
    edit: float = 0.10
    share: float = 0.025
    revoke: float = 0.02
    residency: float = 0.005
    sync: float = 0.12
    resolve: float = 0.02
    approve: float = 0.02
    nudge: float = 0.05
    setup_share: float = 0.7  # chance a node starts with a rule for a (peer, domain)
    reconcile_share: float = 0.4  # share of sync connections that also reconcile


@dataclass
class Msg:
    """One frame in flight on a connection: `seq` numbers the frames of each direction
    of a connection, which is how the receiving end gives them a stream's guarantees."""

    mid: int
    src: int
    dst: int
    conn: int
    kind: str  # "hs" (handshake bytes) or "frame" (a length-prefixed wire message)
    seq: int
    data: bytes
    dialer: bool  # sent by the end that opened the connection
    not_before: int = 0


@dataclass
class Conn:
    """One end of a connection (lost on crash). Frames arrive as a TCP stream would hand
    them over: in order (`rx_next`; later ones wait in `held`), never twice."""

    cid: int
    peer: int
    hs: Handshake
    opened_ms: int
    info: PeerInfo | None = None
    tx_next: int = 0
    rx_next: int = 0
    held: dict[int, Msg] = field(default_factory=dict)
    # our outbox for the peer, as `delivery_frames` cut it; the head one awaits its ack
    deliveries: list[ProposalDelivery | ForgetDelivery] = field(default_factory=list)
    awaiting: ProposalDelivery | ForgetDelivery | None = None


@dataclass
class InitiatorConn(Conn):
    """The pulling side: a `PullRound`, then maybe a `RepairRound` and its fetches."""

    reconcile: bool = False
    receiver_view: CheckedReceiverView | None = None
    pull: PullRound | None = None
    repair: RepairRound | None = None
    fetches: list[FetchVersions] = field(default_factory=list)
    in_flight: list[FetchVersions] = field(default_factory=list)  # sent, unanswered
    repair_view: CheckedReceiverView | None = None  # `fetch_all`'s own view
    group: GroupCommit | None = None  # the pull's staged batches (`FeedPuller.pull`)
    phase: str = "hs"  # hs -> pull -> rec -> fetch -> done


@dataclass
class ResponderConn(Conn):
    """The serving side: the feed's `SyncSender` and the repair responder."""

    sender: SyncSender | None = None
    sender_view: SenderView | None = None
    responder: Reconciler | None = None


@dataclass
class SimNode:
    index: int
    key: NodeKey
    org: str
    region: str
    path: Path
    skew_ms: int
    rules: dict[str, ShareRule] = field(default_factory=dict)  # the oracle's model
    residency: dict[str, ResidencyRule] = field(default_factory=dict)
    acked: list[tuple[str, bytes, str, VersionStamp]] = field(default_factory=list)
    approved: set[tuple[str, bytes]] = field(default_factory=set)
    up: bool = True
    cortex: Cortex | None = None
    conns: dict[int, InitiatorConn | ResponderConn] = field(default_factory=dict)
    # peer id -> the org/region its handshake proved (the gate's table, for `peer_info`)
    met: dict[str, PeerInfo] = field(default_factory=dict)
    hlc: HLC = field(default_factory=HLC)
    audit_seen: tuple[int, bytes] = (0, GENESIS)
    writes_checked_at: int = -1  # the feed position check_writes last saw
    # LMDB's id of the last committed write transaction when check_step last ran: the
    # same id means the Cortex has not changed since, so every check would repeat.
    checked_txn: int = -1

    @property
    def peer(self) -> str:
        return self.key.peer_id

    @property
    def info(self) -> PeerInfo:
        return PeerInfo(self.peer, self.org, self.region)

    def open(self, sim: Simulation) -> None:
        """Open the Cortex and build the stores and the services' sides over it."""
        self.cortex = Cortex.open(self.path)
        policy = lambda domain: ConflictPolicy(lww=True) if domain in LWW_DOMAINS \
            else QUEUE_ALL  # noqa: E731
        self.store = SyncStore(self.cortex, policy, clock=lambda: 0, local_peer=self.peer,
                               content_check=any_content)  # synthetic domains
        self.audit = AuditLog(self.cortex)
        self.policy = PolicyStore(self.cortex, self.key, org=self.org, region=self.region,
                                  audit=self.audit)
        self.desk = AdaptationDesk(self.cortex, self.key, MemoryLedgerSink(), self.audit)
        self.secret = anonymisation_secret(self.key)
        self.sync = SyncSide(self.cortex, self.store,
                             lambda peer: sim.sender_view(self, self.met[peer]),
                             lambda peer: sim.receiver_view(self, self.met[peer]))
        self.sov = SovereigntySide(self.cortex, self.key, self.secret,
                                   SimPolicyStore(self.policy, lambda: sim.tick(self)),
                                   self.audit, self.desk, self.sync)
        self.up = True

    def close(self) -> None:
        if self.cortex is not None:
            self.cortex.close()
            self.cortex = None
        self.conns.clear()
        self.met.clear()
        self.up = False

class ApplyEach:
    """A store for the pull's `GroupCommit` that applies each staged batch through the
    simulation's `_apply`: how the sabotage tests put a broken applier on the pull path."""

    def __init__(self, sim: Simulation, node: SimNode, conn: InitiatorConn) -> None:
        self.sim, self.node, self.conn = sim, node, conn

    def apply_batches(self, batches: Sequence[tuple[str, Sequence[Gene], int | None]],
                      audit: AuditIn | None = None) -> list[ApplyStats]:
        stats = [ApplyStats(refused=list(self.sim._apply(self.node, self.conn, genes, upto)))
                 for _, genes, upto in batches]
        if audit is not None:  # the records, in a transaction of their own
            assert self.node.cortex is not None
            self.node.cortex.write(lambda txn: audit(txn, stats))
        return stats


@dataclass
class SimResult:
    seed: int
    trace_hash: str
    steps: int
    faults: Counter[str]
    stats: Counter[str]


# -- the oracle: an independent reading of the sovereignty rules -------------------------------


def _rule_matches(rule: ShareRule, peer: PeerInfo, domain: str, direction: Direction) -> bool:
    if rule.direction is not Direction.BOTH and rule.direction is not direction:
        return False
    if rule.domain not in ("*", domain):
        return False
    kind, value = rule.subject.kind, rule.subject.value
    return ((kind is SubjectKind.PEER and peer.peer_id == value)
            or (kind is SubjectKind.ORG and peer.org == value)
            or (kind is SubjectKind.REGION and peer.region == value))


@dataclass(frozen=True)
class OracleVerdict:
    allowed: bool
    reason: str = ""
    anonymize: bool = False
    forward: bool = False
    residency: str = ""


def oracle_send(node: SimNode, to: PeerInfo, gene: Gene) -> OracleVerdict:
    """May `node` send `gene` to `to` under its own rules (default deny, deny wins)?"""
    if gene.origin != node.peer and not gene.scope.forward:
        return OracleVerdict(False, "not forwardable")
    matching = [r for r in node.rules.values() if _rule_matches(r, to, gene.domain,
                                                                Direction.SEND)]
    if any(r.effect is Effect.DENY for r in matching):
        return OracleVerdict(False, "a deny rule matches")
    allows = [r for r in matching if r.effect is Effect.ALLOW]
    if not allows:
        return OracleVerdict(False, "no allow rule")
    if gene.scope.residency and gene.scope.residency != to.region:
        return OracleVerdict(False, "gene scope residency")
    residency = ""
    for rule in node.residency.values():
        if rule.domain in ("*", gene.domain):
            if rule.region != to.region:
                return OracleVerdict(False, f"residency {rule.rule_id}")
            residency = rule.region
    return OracleVerdict(True, "", any(r.anonymize for r in allows),
                         gene.scope.forward and all(r.allow_forward for r in allows),
                         residency)


def oracle_receive(node: SimNode, sender: PeerInfo, gene: Gene) -> str:
    """Why `node`'s own rules refuse `gene` from `sender` ("" when they accept it)."""
    if gene.origin != sender.peer_id and not gene.scope.forward:
        return "forwarded without scope.forward"
    if gene.scope.residency and gene.scope.residency != node.region:
        return "outside its residency region"
    matching = [r for r in node.rules.values() if _rule_matches(r, sender, gene.domain,
                                                                Direction.RECEIVE)]
    if any(r.effect is Effect.DENY for r in matching):
        return "a deny rule matches"
    if not any(r.effect is Effect.ALLOW for r in matching):
        return "no allow rule"
    return ""


def _believes_sender_consents(node: SimNode, sender: PeerInfo, domain: str) -> bool:
    believed = node.policy.remote_rules().get(sender.peer_id, ())
    matching = [r for r in believed if _rule_matches(r, node.info, domain, Direction.SEND)]
    return any(r.effect is Effect.ALLOW for r in matching) and not any(
        r.effect is Effect.DENY for r in matching)


def _stamp(gene: Gene) -> VersionStamp:
    return VersionStamp.of(gene.vv, gene.hlc, gene.version_hash)


# -- the simulation ----------------------------------------------------------------------------


class Simulation:
    """One seeded run over nodes whose Cortexes live under `root`."""

    def __init__(self, seed: int, root: Path, config: FedConfig | None = None) -> None:
        self.seed = seed
        self.cfg = config or FedConfig()
        self.rng = random.Random(seed)
        self.root = root
        self.now = EPOCH_MS
        self.step_no = 0
        self.trace: list[str] = []
        self.faults: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.resolutions: list[tuple[int, str]] = []  # (node, gene id) resolved there
        self.flight: list[Msg] = []
        self.next_mid = 0
        self.next_cid = 0
        self.groups: dict[int, int] = {}
        self.dirty: set[int] = set()
        self.nodes: list[SimNode] = []
        self.nodes = self._make_nodes()

    # -- setup --------------------------------------------------------------------------
    def _make_nodes(self) -> list[SimNode]:
        rng = self.rng
        n = rng.randint(self.cfg.min_nodes, self.cfg.max_nodes)
        orgs = [f"org{i}" for i in range(n)]
        if n > 3 and rng.random() < 0.3:
            orgs[-1] = orgs[0]  # two nodes of one organisation
        nodes = []
        for i in range(n):
            seed32 = hashlib.sha256(f"fedsim/{self.seed}/{i}".encode()).digest()
            node = SimNode(i, NodeKey.from_seed(seed32), orgs[i], rng.choice(REGIONS),
                           self.root / f"node{i}", rng.randint(-MAX_SKEW_MS, MAX_SKEW_MS))
            node.open(self)
            nodes.append(node)
        self.nodes = nodes
        for node in nodes:
            for other in nodes:
                if other is node:
                    continue
                for domain in DOMAINS:
                    if rng.random() < self.cfg.setup_share:
                        self._share(node, self._random_rule(other, domain))
            if rng.random() < 0.25:
                self._set_residency(node, ResidencyRule(rng.choice(DOMAINS), node.region))
        self.trace.append(f"setup n={n} " + " ".join(
            f"{x.index}:{x.org}/{x.region}/{len(x.rules)}r" for x in nodes))
        return nodes

    def _random_rule(self, other: SimNode, domain: str) -> ShareRule:
        rng = self.rng
        kind = rng.choices(("peer", "org", "region"), (6, 2, 1))[0]
        subject = (Subject(SubjectKind.PEER, other.peer) if kind == "peer" else
                   Subject(SubjectKind.ORG, other.org) if kind == "org" else
                   Subject(SubjectKind.REGION, other.region))
        if rng.random() < 0.06:
            return ShareRule(subject, domain, Direction.BOTH, Effect.DENY)
        direction = rng.choices((Direction.BOTH, Direction.SEND, Direction.RECEIVE),
                                (7, 1.5, 1.5))[0]
        return ShareRule(subject, "*" if rng.random() < 0.05 else domain, direction,
                         Effect.ALLOW, rng.random() < 0.2, rng.random() < 0.35)

    # -- clocks and trace --------------------------------------------------------------
    def clock(self, node: SimNode) -> int:
        return self.now + node.skew_ms

    def tick(self, node: SimNode) -> int:
        node.hlc = node.hlc.now(self.clock(node))
        return node.hlc.packed

    def log(self, text: str) -> None:
        self.trace.append(f"{self.step_no} {text}")

    def fail(self, text: str) -> None:
        raise SimFailure(f"FAILED SEED={self.seed} step {self.step_no}: {text}")

    # -- the network: connections with a stream's guarantees ---------------------------
    def send(self, src: SimNode, conn: Conn, kind: str, data: bytes) -> None:
        self.flight.append(Msg(self.next_mid, src.index, conn.peer, conn.cid, kind,
                               conn.tx_next, data, isinstance(conn, InitiatorConn)))
        conn.tx_next += 1
        self.next_mid += 1

    def send_frame(self, src: SimNode, conn: Conn, msg: Message) -> None:
        self.send(src, conn, "frame", encode_frame(msg))

    def linked(self, a: int, b: int) -> bool:
        return self.groups.get(a, 0) == self.groups.get(b, 0)

    def deliver(self, msg: Msg) -> None:
        """Hand a frame to its connection as a TCP stream would: duplicates are dropped,
        a frame that overtook an earlier one waits for it, and a frame whose connection
        this end no longer holds (crashed, timed out) is lost, like a reset. A dropped
        frame thus stalls its connection until a timer abandons it."""
        dst = self.nodes[msg.dst]
        if not dst.up or not self.linked(msg.src, msg.dst):
            self.log(f"lost m{msg.mid} {msg.kind} {msg.src}->{msg.dst}")
            return
        conn = dst.conns.get(msg.conn)
        if conn is None and msg.dialer and msg.kind == "hs" and msg.seq == 0:
            conn = self._respond(dst, msg)
        if conn is None or conn.peer != msg.src or msg.dialer is isinstance(conn, InitiatorConn):
            self.log(f"reset m{msg.mid} {msg.src}->{msg.dst} c{msg.conn}")
            return
        if msg.seq < conn.rx_next or msg.seq in conn.held:
            self.stats["duplicates_discarded"] += 1
            self.log(f"duplicate m{msg.mid} discarded")
            return
        conn.held[msg.seq] = msg
        if msg.seq > conn.rx_next:
            self.stats["reordered_held"] += 1
        self.dirty.add(msg.dst)
        while conn.rx_next in conn.held and dst.conns.get(conn.cid) is conn:
            frame = conn.held.pop(conn.rx_next)
            conn.rx_next += 1
            self.log(f"deliver m{frame.mid} {frame.kind} {frame.src}->{frame.dst} "
                     f"c{frame.conn} s{frame.seq}")
            if frame.kind == "hs":
                self._on_hs(dst, conn, frame.data)
            else:
                self._on_frame(dst, conn, decode_frame(frame.data))

    # -- connections and the handshake -------------------------------------------------
    def open_conn(self, a: SimNode, b: SimNode, reconcile: bool) -> None:
        cid = self.next_cid
        self.next_cid += 1
        hs = Handshake(a.key, self.offer(a), b.peer, now_ms=self.clock(a),
                       nonce=self.rng.randbytes(16))
        conn = InitiatorConn(cid, b.index, hs, self.now, reconcile=reconcile)
        a.conns[cid] = conn
        self.log(f"open c{cid} {a.index}->{b.index} rec={int(reconcile)}")
        self.send(a, conn, "hs", hs.data_to_send())

    def offer(self, node: SimNode) -> HandshakeOffer:
        return HandshakeOffer(org=node.org, region=node.region, domains=DOMAINS)

    def _respond(self, node: SimNode, msg: Msg) -> ResponderConn:
        peer = self.nodes[msg.src]
        hs = Handshake(node.key, self.offer(node), peer.peer, now_ms=self.clock(node),
                       nonce=self.rng.randbytes(16))
        conn = ResponderConn(msg.conn, msg.src, hs, self.now)
        node.conns[msg.conn] = conn
        return conn

    def _on_hs(self, node: SimNode, conn: Conn, data: bytes) -> None:
        if conn.hs.done:
            self.fail(f"handshake bytes after the handshake on c{conn.cid}")
        conn.hs.receive_data(data)
        out = conn.hs.data_to_send()
        if out:
            self.send(node, conn, "hs", out)
        if conn.hs.done:
            if conn.hs.accepted:
                self.stats["handshakes"] += 1
                self._accepted(node, conn)
            else:
                self.log(f"handshake c{conn.cid} at {node.index}: {conn.hs.outcome}")
                self.stats["handshakes_refused"] += 1
                node.conns.pop(conn.cid, None)

    def _accepted(self, node: SimNode, conn: Conn) -> None:
        """What the gate and the services do with a handshaken peer: record it
        (`SovereigntyService._meet`: `set_peer`, then deliver its outbox) and, on the
        dialling side, pull from it (`FeedPuller.pull`)."""
        outcome = conn.hs.outcome
        peer = outcome.peer  # type: ignore[union-attr]
        info = PeerInfo(peer.peer_id, peer.org, peer.region)
        truth = self.nodes[conn.peer].info
        if info != truth:
            self.fail(f"handshake at {node.index} verified {info}, the peer is {truth}")
        conn.info = info
        node.met[info.peer_id] = info
        node.policy.set_peer(info, hlc=self.tick(node))
        conn.deliveries = delivery_frames(node.policy.outbox(info.peer_id),
                                          node.sov.forget.forget_outbox(info.peer_id))
        self._deliver_next(node, conn)
        if isinstance(conn, InitiatorConn):
            self._start_pull(node, conn)

    def sender_view(self, node: SimNode, info: PeerInfo) -> SenderView:
        """How `node` serves `info` (`SovereigntyService.sender_view`; overridden by the
        sabotage tests)."""
        return node.sov.sender_view(info)

    def receiver_view(self, node: SimNode, info: PeerInfo) -> ReceiverView:
        return node.sov.receiver_view(info)

    def _on_frame(self, node: SimNode, conn: Conn, msg: Message) -> None:
        if conn.info is None:
            self.fail(f"{msg.TYPE} before the handshake on c{conn.cid}")
        if isinstance(msg, (ProposalDelivery, ForgetDelivery)):
            self._take_delivery(node, conn, msg)
        elif isinstance(msg, DeliveryAck):
            self._on_ack(node, conn, msg)
        elif isinstance(conn, ResponderConn):
            if isinstance(msg, SyncPull):
                self._serve_pull(node, conn, msg)
            elif isinstance(msg, ReconcileStep):
                self._serve_step(node, conn, msg)
            elif isinstance(msg, FetchVersions):
                self._serve_fetch(node, conn, msg)
            elif isinstance(msg, ReconcileEnd):
                self.stats["reconcile_ends"] += 1
            else:
                self.fail(f"unexpected {msg.TYPE} at the serving end of c{conn.cid}")
        elif isinstance(msg, SyncBatch):
            self._on_batch(node, conn, msg)
        elif isinstance(msg, ReconcileStep):
            self._on_step(node, conn, msg)
        elif isinstance(msg, Versions):
            self._on_versions(node, conn, msg)
        else:
            self.fail(f"unexpected {msg.TYPE} at the pulling end of c{conn.cid}")

    def busy(self, conn: Conn) -> bool:
        """Has this end of a connection something left to do?"""
        return bool(conn.awaiting is not None or conn.deliveries or (
            isinstance(conn, InitiatorConn) and conn.phase != "done"))

    # -- agreements: `AgreementDelivery` on both ends -----------------------------------
    def _deliver_next(self, node: SimNode, conn: Conn) -> None:
        """One frame at a time, each awaiting its ack (`AgreementDelivery.deliver`)."""
        if conn.awaiting is None and conn.deliveries:
            conn.awaiting = conn.deliveries.pop(0)
            self.send_frame(node, conn, conn.awaiting)

    def _take_delivery(self, node: SimNode, conn: Conn,
                       msg: ProposalDelivery | ForgetDelivery) -> None:
        """`AgreementDelivery.serve`: apply and acknowledge. Nothing here guards against
        re-delivered or late proposals: `receive_proposal` must ignore what is not newer
        than what it applied, and outbox numbers must never be reused."""
        assert conn.info is not None
        peer = conn.info.peer_id
        if isinstance(msg, ForgetDelivery):
            ack = node.sov.delivery.take_tombstones(peer, msg)
        else:
            stale = node.sov.store.stale
            ack = node.sov.delivery.take_proposals(peer, msg)
            stale = node.sov.store.stale - stale
            self.stats["stale_proposals_skipped"] += stale
            self.stats["proposals"] += len(msg.proposals) - stale - ack.refused
        if ack.refused:
            warnings = [e for e in node.sov.log.events if e[0] == "warning"]
            self.fail(f"node {node.index} refused an honest delivery: {warnings[-1:]}")
        self.send_frame(node, conn, ack)
        if ack.effective:
            self._backfill(node, conn)

    def _on_ack(self, node: SimNode, conn: Conn, ack: DeliveryAck) -> None:
        assert conn.info is not None
        peer = conn.info.peer_id
        if conn.awaiting is None:
            self.fail(f"node {conn.peer} acknowledged a delivery nobody sent")
        sent, conn.awaiting = conn.awaiting, None
        try:
            check_ack(ack, sent)
        except RemoteProtocolError as exc:
            self.fail(f"node {conn.peer}'s honest ack refused: {exc}")
        if isinstance(sent, ProposalDelivery):
            node.policy.delivered(peer, sent.upto)
            if ack.effective and node.sov.effective_with(peer):
                self._backfill(node, conn)
        else:
            node.sov.forget.forget_delivered(peer, sent.upto)
        self._deliver_next(node, conn)

    def _backfill(self, node: SimNode, conn: Conn) -> None:
        """An agreement came into force: reconcile after the pull (`backfill`). Only the
        dialling end of a simulated connection starts conversations."""
        if not isinstance(conn, InitiatorConn):
            return
        self.stats["backfills"] += 1
        if conn.phase in ("hs", "pull"):
            conn.reconcile = True
        elif conn.phase == "done":
            self._start_reconcile(node, conn)

    # -- change-feed sync: `PullRound` and `answer_pull` --------------------------------
    def _start_pull(self, node: SimNode, conn: InitiatorConn) -> None:
        """`FeedPuller.pull`: a receiver from our checkpoint, applying through the store
        (genes and checkpoint in one transaction), behind the sovereignty view."""
        assert conn.info is not None
        peer = conn.info.peer_id

        conn.receiver_view = self.checked_view(node, conn)

        def applier(sender: str, genes: Sequence[Gene], upto: int) -> None:
            self.check_received(node, conn, genes)
            assert conn.group is not None
            conn.group.stage(sender, genes, upto)

        # The daemon's group commit, its bounds varied per connection (without a draw:
        # the seed's event stream stays as it was) so groups of 1 to 4 batches happen.
        conn.group = GroupCommit(self.group_store(node, conn),
                                 lambda: self.clock(node) / 1000,
                                 max_batches=1 + conn.cid % 4)

        receiver = SyncReceiver(peer, applier, checkpoint=node.cortex.get_checkpoint(peer),
                                accept=conn.receiver_view.accept)
        cap = self.rng.randint(1, 4)
        conn.pull = PullRound(receiver, cap=cap, zstd=node.sync.settings.compress,
                              first_genes=self.rng.randint(1, cap))
        conn.phase = "pull"
        self.send_frame(node, conn, conn.pull.start())

    def _serve_pull(self, node: SimNode, conn: ResponderConn, msg: SyncPull) -> None:
        """`FeedServer.serve_sync`: one view and sender per stream, `answer_pull` per
        request, the audit written once the batch has gone."""
        assert conn.info is not None
        if conn.sender is None:
            conn.sender_view = node.sync.sender_view(conn.info.peer_id)
            conn.sender = SyncSender(conn.info.peer_id, conn.sender_view.read_feed,
                                     feed_policy(conn.sender_view))
        assert conn.sender_view is not None
        reply, n, _ = answer_pull(conn.sender, msg, lambda: node.cortex.last_seq,
                                  node.sync.settings.compress)
        data = encode_frame(reply)
        self.check_outgoing(node, conn.info, reply, data)
        self.send(node, conn, "frame", data)
        if n:
            self.stats["genes_sent"] += conn.sender_view.finish_batch()

    def _on_batch(self, node: SimNode, conn: InitiatorConn, msg: SyncBatch) -> None:
        """The body of `FeedPuller.pull`'s loop: open, ask ahead, apply, ask next."""
        if conn.phase != "pull" or conn.pull is None or conn.receiver_view is None:
            self.fail(f"node {conn.peer} sent a batch nobody asked for on c{conn.cid}")
        try:
            opened = conn.pull.open(msg)
            if opened.ahead is not None:
                self.stats["ahead_pulls"] += 1
                self.send_frame(node, conn, opened.ahead)
            conn.receiver_view.begin_batch()
            step = conn.pull.apply(opened)
        except RemoteProtocolError as exc:
            self.fail(f"honest batch refused by {node.index}: {exc}")
        if step.done or conn.group.due():
            self._commit(node, conn)
        self.log(f"batch c{conn.cid} applied={len(step.outcome.applied)} "
                 f"rejected={len(step.outcome.rejected)} cp={step.outcome.checkpoint}")
        if step.rewound:
            self.fail(f"node {conn.peer}'s feed went back below {node.index}'s checkpoint")
        if step.send is not None:
            self.send_frame(node, conn, step.send)
        if step.done:
            if conn.reconcile:
                self._start_reconcile(node, conn)
            else:
                self._finish(node, conn)

    def checked_view(self, node: SimNode, conn: InitiatorConn) -> CheckedReceiverView:
        """The service's receiver view for the peer, each refusal explained or failed."""
        assert conn.info is not None

        def explain(gene: Gene) -> None:
            assert conn.info is not None
            self.stats["refused_by_receiver"] += 1
            if not self.refusal_explained(node, conn.info, gene):
                self.fail(f"node {node.index} refused gene {gene.id} ({gene.domain}) from "
                          f"{conn.peer} that its rules accept")

        return CheckedReceiverView(node.sync.receiver_view(conn.info.peer_id), explain)

    def check_received(self, node: SimNode, conn: InitiatorConn,
                       genes: Sequence[Gene]) -> None:
        """Nothing the receiver's own rules refuse is applied (the oracle's look)."""
        assert conn.info is not None
        for gene in genes:
            why = oracle_receive(node, conn.info, gene)
            if why:
                self.fail(f"node {node.index} applied gene {gene.id} from {conn.peer}: {why}")

    def group_store(self, node: SimNode, conn: InitiatorConn) -> Any:
        """What the pull's `GroupCommit` applies through: the node's `SyncStore`
        (`apply_batches`, one transaction a group; the sabotage tests replace it)."""
        return node.store

    def _commit(self, node: SimNode, conn: InitiatorConn) -> None:
        """`FeedPuller.pull`'s `commit`: the staged group in one transaction, then the
        view's audit records for every gene it judged since the last commit."""
        assert conn.group is not None and conn.receiver_view is not None
        group = conn.group
        done: list[tuple[StagedBatch, ApplyStats]] = []

        def apply(audit: AuditIn | None) -> list[ApplyStats]:
            done.extend(group.commit(audit))
            return [s for _, s in done]

        # The genes and their audit records in one transaction (`commit_audited`).
        for stats in commit_audited(apply, conn.receiver_view):
            self.stats["applied"] += stats.applied
            self.stats["queued"] += stats.queued
        self.stats["group_commits"] += 1
        if len(done) > 1:
            self.stats["multi_batch_groups"] += 1

    def _apply(self, node: SimNode, conn: InitiatorConn, genes: Sequence[Gene],
               upto: int | None) -> list[RejectedGene]:
        """The repair fetch's applier (`SyncStore.apply_batch`), after the oracle's look."""
        assert conn.info is not None
        self.check_received(node, conn, genes)
        stats = node.store.apply_batch(conn.info.peer_id, genes, upto)
        self.stats["applied"] += stats.applied
        self.stats["queued"] += stats.queued
        return stats.refused

    def _finish(self, node: SimNode, conn: InitiatorConn) -> None:
        """The conversations are over; the connection stays (the peer may still be
        delivering its outbox) until its timer closes it."""
        conn.phase = "done"
        self.stats["rounds_completed"] += 1
        self.log(f"done c{conn.cid}")

    # -- anti-entropy repair: `RepairRound`, `Repairer.items` / `versions` -------------
    def _start_reconcile(self, node: SimNode, conn: InitiatorConn) -> None:
        assert conn.info is not None
        items = node.sync.repairer.items(conn.info.peer_id)
        conn.repair = RepairRound(items, zstd=node.sync.settings.compress)
        conn.phase = "rec"
        self._send_step(node, conn, conn.repair.start())

    def _send_step(self, node: SimNode, conn: Conn, step: ReconcileStep) -> None:
        assert conn.info is not None
        self.check_reconcile(node, conn.info, step)
        self.send_frame(node, conn, step)

    def _serve_step(self, node: SimNode, conn: ResponderConn, msg: ReconcileStep) -> None:
        """`Repairer.serve_reconcile`: the responder is built on the first step."""
        assert conn.info is not None
        if conn.responder is None:
            conn.responder = Reconciler.responder(node.sync.repairer.items(conn.info.peer_id))
        try:
            reply = answer_step(conn.responder, msg)
        except ProtocolError as exc:
            self.fail(f"honest reconcile message refused by {node.index}: {exc}")
        self._send_step(node, conn, reply)

    def _on_step(self, node: SimNode, conn: InitiatorConn, msg: ReconcileStep) -> None:
        if conn.phase != "rec" or conn.repair is None:
            self.fail(f"node {conn.peer} sent a reconcile step nobody asked for")
        try:
            step = conn.repair.receive(msg)
        except RemoteProtocolError as exc:
            self.fail(f"honest reconcile reply refused by {node.index}: {exc}")
        if step is not None:
            self._send_step(node, conn, step)
            return
        self.stats["repair_needed"] += len(conn.repair.need)
        # The daemon asks for up to 256 versions a fetch; a simulated repair needs a few,
        # so each fetch is cut smaller (1 to 3 per connection, no draw) and the window
        # of fetches in flight fills as it does in a big backfill.
        size = 1 + conn.cid % 3
        conn.fetches = [FetchVersions(f.hashes[i:i + size], zstd=f.zstd)
                        for f in conn.repair.fetches() for i in range(0, len(f.hashes), size)]
        conn.repair_view = self.checked_view(node, conn)
        self._next_fetch(node, conn)

    def _next_fetch(self, node: SimNode, conn: InitiatorConn) -> None:
        """`repair_fetch.fetch_all`: up to `FETCH_WINDOW` fetches in flight (the stream
        answers them in order); the end once every answer is applied."""
        assert conn.repair is not None
        self._fill_window(node, conn)
        if not conn.in_flight:
            self.send_frame(node, conn, conn.repair.end())
            self._finish(node, conn)

    def _fill_window(self, node: SimNode, conn: InitiatorConn) -> None:
        while conn.fetches and len(conn.in_flight) < FETCH_WINDOW:
            conn.phase = "fetch"
            conn.in_flight.append(conn.fetches.pop(0))
            self.send_frame(node, conn, conn.in_flight[-1])
            if len(conn.in_flight) > 1:
                self.stats["fetches_pipelined"] += 1

    def _serve_fetch(self, node: SimNode, conn: ResponderConn, msg: FetchVersions) -> None:
        assert conn.info is not None
        reply = node.sync.repairer.versions(conn.info.peer_id, msg.hashes, msg.zstd)
        data = encode_frame(reply)
        self.check_outgoing(node, conn.info, reply, data)
        self.send(node, conn, "frame", data)

    def _on_versions(self, node: SimNode, conn: InitiatorConn, msg: Versions) -> None:
        """`fetch_all`: the next fetch goes out, the answer is checked against the fetch
        rules (verified only), then `_apply_group`: the view judges each gene, the store
        applies what it accepted, the view audits (the daemon groups the answers already
        waiting; here each arrives alone, a group of one)."""
        if conn.phase != "fetch" or not conn.in_flight or conn.repair_view is None:
            self.fail(f"node {conn.peer} sent versions nobody asked for")
        asked = conn.in_flight.pop(0)
        self._fill_window(node, conn)  # keep the window full while this one is checked
        try:
            fetched = check_versions(msg, asked.hashes, lambda gene: True)
        except RemoteProtocolError as exc:
            self.fail(f"node {conn.peer}'s fetch answer to {node.index} refused: {exc}")
        good = [gene for gene in fetched.good if conn.repair_view.accept(gene)]
        store = self.group_store(node, conn)
        assert conn.info is not None
        peer = conn.info.peer_id

        def apply(audit: AuditIn | None) -> list[ApplyStats]:
            """`_apply_fetched`: no checkpoint moves; the records in the same txn."""
            self.check_received(node, conn, good)
            return list(store.apply_batches([(peer, good, None)], audit=audit))

        for stats in commit_audited(apply, conn.repair_view):
            self.stats["applied"] += stats.applied
            self.stats["queued"] += stats.queued
        self.stats["repaired"] += len(good)
        self._next_fetch(node, conn)

    # -- the leakage checks (at the moment of sending, on the bytes) -----------------------
    def original_of(self, node: SimNode, to: PeerInfo, gene: Gene) -> Gene | None:
        stored = node.cortex.get_by_version_hash(gene.version_hash)
        if stored is not None:
            return stored
        pkey = peer_key(node.secret, to.peer_id)
        tag = gene.parents[0] if gene.parents else None  # a derived gene's first parent
        for gid in node.cortex.gene_ids():
            if derived_id(pkey, gid) == tag:
                return node.cortex.get_gene_version(gid, gene.version)
        return None

    def check_outgoing(self, node: SimNode, to: PeerInfo, msg: Message, data: bytes) -> None:
        """Every gene in this frame (its bytes as they go on the wire) may go to `to`
        under `node`'s rules right now."""
        if isinstance(msg, SyncBatch):
            kind, wires = "batch", msg.open()[0].genes
        elif isinstance(msg, Versions):
            kind = "versions"
            wires = tuple(decode_wire_genes(decompress(msg.genes, msg.zstd), MAX_FETCH_HASHES))
        else:
            self.fail(f"{node.index} sent genes in a {msg.TYPE}")
        for wire in wires:
            gene = Gene.from_wire(wire)
            original = self.original_of(node, to, gene)
            if original is None:
                self.fail(f"{node.index} sent {to.peer_id[-6:]} gene {gene.id} it never held")
            verdict = oracle_send(node, to, original)
            where = f"{kind} {node.index}->{self.index_of(to)} gene {original.id}"
            if original.author == to.peer_id:
                self.fail(f"echo: {where} offers the receiver a version it authored")
            if gene.version_hash != original.version_hash and original.origin != node.peer:
                self.fail(f"loop: {where} sends a derived form of a gene whose origin is "
                          f"{original.origin[-6:]}, not the sender")
            if not verdict.allowed:
                self.fail(f"leak: {where} ({original.domain}) sent against policy: "
                          f"{verdict.reason}")
            if verdict.anonymize:
                self.stats["checked_anonymised"] += 1
                clear = [original.name, original.id, *(v for v in original.params.values()
                                                      if isinstance(v, str))]
                if original.purpose:
                    clear.append(original.purpose)
                for text in clear:
                    if text.encode() in data:
                        self.fail(f"leak: {where} carries {text!r} in clear (anonymised)")
            if gene.scope.forward and not verdict.forward:
                self.fail(f"leak: {where} lets the receiver forward it")
            if gene.scope.forward and verdict.residency and \
                    gene.scope.residency != verdict.residency:
                self.fail(f"leak: {where} forwardable without its residency")
        self.stats[f"checked_{kind}"] += 1

    def check_reconcile(self, node: SimNode, to: PeerInfo, step: ReconcileStep) -> None:
        """Ids listed in a reconciliation message are versions `to` may see, or versions
        `to` authored itself (naming those tells it nothing it does not hold)."""
        shown: dict[bytes, Gene] | None = None
        for r in step.msg.ranges:
            if r.mode is not Mode.ID_LIST:
                continue
            for item in r.ids:
                original = node.cortex.get_by_version_hash(item)
                if original is None:  # a derived form: which stored head is it of?
                    if shown is None:
                        shown = {h: g for h, (g, _) in self.shown(node, to).items()}
                    original = shown.get(item)
                if original is not None and original.author == to.peer_id \
                        and original.version_hash == item:
                    self.stats["listed_own_heads"] += 1
                    continue
                if original is None or not oracle_send(node, to, original).allowed:
                    self.fail(f"leak: reconcile {node.index}->{self.index_of(to)} "
                              f"lists version {item.hex()[:16]} outside policy")

    def shown(self, node: SimNode, to: PeerInfo) -> dict[bytes, tuple[Gene, Gene]]:
        """version hash -> (stored head, the form `to` may have) for every head `node`
        may show `to`: the daemon's own sender view decides (`SovereignSenderView`)."""
        view = node.sov.sender_view(to)
        out: dict[bytes, tuple[Gene, Gene]] = {}
        for gene in node.cortex.genes():
            form = view.outgoing(gene)
            if form is not None:
                out[form.version_hash] = (gene, form)
        return out

    def index_of(self, info: PeerInfo) -> int:
        return next(n.index for n in self.nodes if n.peer == info.peer_id)

    # -- the workload ------------------------------------------------------------------
    def overlaps(self, node: SimNode, rule: ShareRule) -> bool:
        """Would `rule` and another allow rule of `node` match one peer and domain? (Each
        must be proposed and revoked on its own; counted to show runs exercise it.)"""
        if rule.effect is not Effect.ALLOW:
            return False
        for other in node.rules.values():
            if other.effect is not Effect.ALLOW or other.rule_id == rule.rule_id:
                continue
            if "*" not in (rule.domain, other.domain) and rule.domain != other.domain:
                continue
            for peer in self.peers_of(node):
                if rule.subject.matches(peer) and other.subject.matches(peer):
                    return True
        return False

    def peers_of(self, node: SimNode) -> list[PeerInfo]:
        return [n.info for n in self.nodes if n is not node]

    def _share(self, node: SimNode, rule: ShareRule) -> None:
        if self.overlaps(node, rule):
            self.stats["overlapping_rules"] += 1
        node.policy.share(rule, hlc=self.tick(node))
        node.rules[rule.rule_id] = rule

    def _set_residency(self, node: SimNode, rule: ResidencyRule, remove: bool = False) -> None:
        node.policy.set_residency(rule, remove=remove)
        if remove:
            node.residency.pop(rule.rule_id, None)
        else:
            node.residency[rule.rule_id] = rule

    def _ack(self, node: SimNode, gene: Gene) -> None:
        node.acked.append((gene.id, gene.version_hash, gene.domain, _stamp(gene)))

    def act_create(self, node: SimNode) -> None:
        rng = self.rng
        # Fixed-width serials: no clear-text token is a substring of another, so the
        # byte search in `check_outgoing` cannot confuse two genes.
        serial = f"{node.index}-{len(node.acked):05d}"
        domain = rng.choice(DOMAINS)
        scope = ShareScope(forward=rng.random() < 0.4,
                           residency=node.region if rng.random() < 0.15 else "")
        gene = Gene.create(
            node.key, domain=domain, name=f"secret-rule-{serial}",
            codons=[Codon.simple("s11", ">", round(rng.uniform(0, 100), 3))],
            action=rng.choice(ACTIONS), purpose=f"private-purpose-{serial}",
            params={"note": f"tenant-{serial}", "k": rng.randint(1, 9)},
            hlc=self.tick(node), scope=scope)
        if node.cortex.get_gene(gene.id) is not None:
            return
        node.cortex.put_gene(gene)
        self._ack(node, gene)
        self.log(f"create {node.index} {gene.id[:8]} {domain}")

    def act_edit(self, node: SimNode) -> None:
        ids = node.cortex.gene_ids()
        if not ids:
            return
        # Most edits go to genes that came from peers: that is where concurrent
        # versions, conflicts and LWW contests come from.
        foreign = [g.id for g in node.cortex.genes() if g.origin != node.peer]
        pool = foreign if foreign and self.rng.random() < 0.8 else ids
        head = node.cortex.require_gene(self.rng.choice(pool))
        edited = head.edited(node.key, hlc=self.tick(node),
                             version=node.cortex.next_version(head.id),
                             action=self.rng.choice(ACTIONS),
                             codons=(Codon.simple("s11", ">",
                                                  round(self.rng.uniform(0, 100), 3)),))
        node.cortex.put_gene(edited)
        self._ack(node, edited)
        self.log(f"edit {node.index} {head.id[:8]} v{edited.version}")

    def act_resolve(self, node: SimNode) -> None:
        conflicts = node.store.conflicts()
        if not conflicts:
            return
        conflict = self.rng.choice(conflicts)
        keep = self.rng.choice(("local", "remote"))
        resolved = resolve_conflict(node.store, node.key, conflict.key, keep, None,
                                    physical_ms=self.clock(node))
        self._ack(node, resolved)
        self.resolutions.append((node.index, resolved.id))
        self.stats["resolved"] += 1
        self.log(f"resolve {node.index} {conflict.key[:12]} keep={keep}")

    def act_approve(self, node: SimNode) -> None:
        pending = node.desk.pending()
        if not pending:
            return
        gene = self.rng.choice(pending)
        node.desk.approve(gene.id)
        node.approved.add((gene.id, gene.version_hash))
        self.stats["approved"] += 1
        self.log(f"approve {node.index} {gene.id[:8]}")

    def act_share(self, node: SimNode) -> None:
        other = self.rng.choice([n for n in self.nodes if n is not node])
        rule = self._random_rule(other, self.rng.choice(DOMAINS))
        self._share(node, rule)
        self.log(f"share {node.index} {rule.rule_id[:60]}")

    def act_revoke(self, node: SimNode) -> None:
        if not node.rules:
            return
        rule = node.rules[self.rng.choice(sorted(node.rules))]
        removed = node.policy.revoke(rule.subject, rule.domain, direction=rule.direction,
                                     effect=rule.effect, hlc=self.tick(node))
        for gone in removed:
            node.rules.pop(gone.rule_id, None)
        self.log(f"revoke {node.index} {rule.rule_id[:60]} removed={len(removed)}")

    def act_residency(self, node: SimNode) -> None:
        if node.residency and self.rng.random() < 0.5:
            rule = node.residency[self.rng.choice(sorted(node.residency))]
            self._set_residency(node, rule, remove=True)
        else:
            self._set_residency(node, ResidencyRule(self.rng.choice(DOMAINS), node.region))
        self.log(f"residency {node.index} {sorted(node.residency)}")

    def act_nudge(self, node: SimNode) -> None:
        """The node's timers: abandon connections older than `CONN_TIMEOUT_MS` (a stream
        stalled by a lost frame, or one whose work is over). Nothing is re-sent on a
        stream: the next connection delivers the outbox again and pulls from the
        checkpoint the store kept."""
        for cid in sorted(node.conns):
            conn = node.conns[cid]
            if self.now - conn.opened_ms > CONN_TIMEOUT_MS:
                node.conns.pop(cid)
                if self.busy(conn):
                    self.stats["conns_timed_out"] += 1
                if isinstance(conn, InitiatorConn) and conn.group is not None \
                        and conn.group.staged:
                    # The round was cut with verified batches staged: the daemon
                    # commits them (they are sound) before it lets the link go.
                    self.stats["staged_committed_on_cut"] += 1
                    self._commit(node, conn)
        self.log(f"nudge {node.index}")

    # -- faults ------------------------------------------------------------------------
    def crash(self, node: SimNode) -> None:
        node.close()
        self.faults["crash"] += 1
        self.log(f"crash {node.index}")

    def restart(self, node: SimNode) -> None:
        node.open(self)
        node.hlc = HLC()
        node.writes_checked_at = -1
        node.checked_txn = -1
        self.faults["restart"] += 1
        self.dirty.add(node.index)
        self.check_audit(node, full=True)
        self.log(f"restart {node.index}")

    # -- one step ----------------------------------------------------------------------
    def step(self) -> None:
        cfg, rng = self.cfg, self.rng
        self.step_no += 1
        self.now += rng.randint(1, 60)
        self.dirty.clear()
        up = [n for n in self.nodes if n.up]
        down = [n for n in self.nodes if not n.up]
        ready = [m for m in self.flight if m.not_before <= self.now]
        choices: list[tuple[str, float]] = [
            ("deliver", cfg.deliver if ready else 0), ("drop", cfg.drop if self.flight else 0),
            ("duplicate", cfg.duplicate if self.flight else 0),
            ("delay", cfg.delay if self.flight else 0), ("partition", cfg.partition),
            ("heal", cfg.heal if len(set(self.groups.values())) > 1 else 0),
            ("crash", cfg.crash if len(up) > 1 else 0),
            ("restart", cfg.restart if down else 0),
        ]
        if up:
            choices += [(name, getattr(cfg, name)) for name in (
                "create", "edit", "share", "revoke", "residency", "sync", "resolve",
                "approve", "nudge")]
        names = [c for c, w in choices if w > 0]
        event = rng.choices(names, [w for c, w in choices if w > 0])[0]
        if event == "deliver":
            msg = rng.choice(ready)
            self.flight.remove(msg)
            self.deliver(msg)
        elif event == "drop":
            msg = self.flight.pop(rng.randrange(len(self.flight)))
            self.faults["drop"] += 1
            self.log(f"drop m{msg.mid}")
        elif event == "duplicate":
            msg = rng.choice(self.flight)
            self.flight.append(Msg(self.next_mid, msg.src, msg.dst, msg.conn, msg.kind,
                                   msg.seq, msg.data, msg.dialer))
            self.next_mid += 1
            self.faults["duplicate"] += 1
            self.log(f"duplicate m{msg.mid}")
        elif event == "delay":
            msg = rng.choice(self.flight)
            msg.not_before = self.now + rng.randint(500, 3000)
            self.faults["delay"] += 1
            self.log(f"delay m{msg.mid}")
        elif event == "partition":
            self.groups = {n.index: rng.randrange(2) for n in self.nodes}
            self.faults["partition"] += 1
            self.log(f"partition {sorted(self.groups.items())}")
        elif event == "heal":
            self.groups = {}
            self.faults["heal"] += 1
            self.log("heal")
        elif event == "crash":
            self.crash(rng.choice(up))
        elif event == "restart":
            self.restart(rng.choice(down))
        elif event == "sync":
            a = rng.choice(up)
            b = rng.choice([n for n in self.nodes if n is not a])
            self.open_conn(a, b, rng.random() < cfg.reconcile_share)
        else:
            node = rng.choice(up)
            self.dirty.add(node.index)
            getattr(self, "act_" + event)(node)
        if event in ("deliver", "drop", "duplicate", "delay", "partition", "heal"):
            self.stats[f"event_{event}"] += 1
        self.check_step()

    # -- invariants --------------------------------------------------------------------
    def check_step(self) -> None:
        for index in sorted(self.dirty):
            node = self.nodes[index]
            if node.up:
                assert node.cortex is not None
                txn = node.cortex.env.info()["last_txnid"]
                if txn == node.checked_txn:
                    self.stats["unchanged_checks_skipped"] += 1
                    continue
                node.checked_txn = txn
                self.check_writes(node)
                self.check_native(node)
                self.check_audit(node)

    def check_writes(self, node: SimNode) -> None:
        """Every acknowledged write survives at its origin (an LWW loss is no loss
        there: the domain chose it), and the head never falls behind it. Heads and
        stored versions only change with a new feed entry, so an unchanged feed position
        needs no new check."""
        seq = node.cortex.last_seq
        if seq == node.writes_checked_at:
            return
        node.writes_checked_at = seq
        for gene_id, vhash, domain, stamp in node.acked:
            head = node.cortex.get_gene(gene_id)
            if head is None:
                self.fail(f"node {node.index} lost gene {gene_id} entirely")
            kept = node.cortex.get_by_version_hash(vhash) is not None
            order = compare(head.vv, stamp.vv)
            if domain in LWW_DOMAINS:
                if order is Order.DESCENDED_BY or (
                        order is Order.CONCURRENT and _stamp(head).lww_key < stamp.lww_key):
                    self.fail(f"node {node.index}: LWW head of {gene_id} lost to an "
                              "older or lower write")
                continue
            if not kept:
                self.fail(f"node {node.index} lost its acknowledged write {gene_id} "
                          f"{vhash.hex()[:16]}")
            if order not in (Order.EQUAL, Order.DESCENDS):
                self.fail(f"node {node.index}: head of {gene_id} does not descend its "
                          f"acknowledged write ({order.value})")

    def check_native(self, node: SimNode) -> None:
        for gene in node.cortex.genes(status=GeneStatus.NATIVE):
            if gene.author != node.peer and (gene.id, gene.version_hash) not in node.approved:
                self.fail(f"node {node.index}: received gene {gene.id} is native without "
                          "approval")

    def check_audit(self, node: SimNode, full: bool = False) -> None:
        """Incrementally: records already checked never change, new ones chain on."""
        if full:
            report = node.audit.verify()
            if not report.ok:
                self.fail(f"node {node.index} audit log: {report.reason} at "
                          f"{report.bad_index}")
            node.audit_seen = (report.size, report.head)
            return
        count, head = node.audit_seen
        db = node.cortex.open_db(AUDIT_DB)
        with node.cortex.env.begin() as txn:
            cur = txn.cursor(db=db)
            if count:
                raw = txn.get((count - 1).to_bytes(8, "big"), db=db)
                if raw is None or canonical.decode(raw)["hash"] != head:
                    self.fail(f"node {node.index}: audit record {count - 1} changed")
            if not cur.set_range(count.to_bytes(8, "big")):
                return
            for key, raw in cur:
                stored = canonical.decode(raw)
                index = int.from_bytes(key, "big")
                if index != count or stored["prev"] != head or \
                        chain_hash(head, stored["body"]) != stored["hash"]:
                    self.fail(f"node {node.index}: audit chain broken at {index}")
                count, head = count + 1, stored["hash"]
        node.audit_seen = (count, head)

    # -- the end of a run ----------------------------------------------------------------
    def settle(self) -> None:
        """Heal, restart everyone, drain the network, sync to quiescence, check."""
        self.step_no += 1
        self.groups = {}
        for node in self.nodes:
            if not node.up:
                self.restart(node)
        self.drain()
        before = None
        for round_no in range(MAX_QUIESCENCE_ROUNDS):
            for a in self.nodes:
                for b in self.nodes:
                    if a is not b:
                        self.open_conn(a, b, True)
                        self.drain()
            state = self.fingerprint()
            self.log(f"settle round {round_no}")
            if state == before:
                break
            before = state
        else:
            self.fail(f"no quiescence after {MAX_QUIESCENCE_ROUNDS} sync rounds")
        for node in self.nodes:
            self.check_writes(node)
            self.check_native(node)
            self.check_audit(node, full=True)
        self.check_consent()
        self.check_convergence()
        self.check_settlement()

    def drain(self) -> None:
        """Deliver everything in flight in order, without faults; let the nodes' timers
        run until no connection has anything left to do."""
        for _ in range(100_000):
            self.dirty = set()
            if self.flight:
                self.deliver(self.flight.pop(0))
            elif any(self.busy(c) for n in self.nodes for c in n.conns.values()):
                self.now += 100
                for node in self.nodes:
                    if node.conns:
                        self.act_nudge(node)
            else:
                return
            self.check_step()
        self.fail("the network never drained")

    def fingerprint(self) -> list[Any]:
        out = []
        for node in self.nodes:
            conflicts = sorted(c.key for c in node.store.conflicts())
            remote = sorted((p, sorted(r.rule_id for r in rs))
                            for p, rs in node.policy.remote_rules().items())
            heads = sorted((g.id, g.version_hash) for g in node.cortex.genes())
            out.append((heads, conflicts, remote))
        return out

    def refusal_explained(self, node: SimNode, sender: PeerInfo, gene: Gene) -> bool:
        """A receiver-side refusal has a reason the harness can name on its own."""
        return bool(oracle_receive(node, sender, gene)) or gene.origin == node.peer \
            or not _believes_sender_consents(node, sender, gene.domain)

    def check_settlement(self) -> None:
        """After a node resolved a conflict, every node its resolution reaches holds no
        queued conflict on that gene whose two sides the resolution descends from."""
        for index, gene_id in self.resolutions:
            a = self.nodes[index]
            for b in self.nodes:
                if b is a:
                    continue
                accept = b.policy.policies()
                sent = [form for head, form in self.shown(a, b.info).values()
                        if accept.allowed_to_receive(form, a.peer, a.org, a.region).allowed
                        and head.id == gene_id]
                if not sent:
                    continue
                self.stats["settlements_checked"] += 1
                for conflict in b.store.conflicts():
                    if conflict.gene_id == sent[0].id \
                            and descends(sent[0].vv, conflict.local.vv) \
                            and descends(sent[0].vv, conflict.remote.vv):
                        self.fail(f"node {b.index} still queues conflict {conflict.key} that "
                                  f"node {index}'s resolution (v{sent[0].version}) settles")

    def check_consent(self) -> None:
        """Each node's view of a peer's consent is what the peer's rules say."""
        for a in self.nodes:
            remote = a.policy.remote_rules()
            for b in self.nodes:
                if a is b:
                    continue
                believed = remote.get(b.peer, ())
                actual = [r for r in b.rules.values() if r.effect is Effect.ALLOW]
                for domain in DOMAINS:
                    for direction in (Direction.SEND, Direction.RECEIVE):
                        view = any(_rule_matches(r, a.info, domain, direction)
                                   for r in believed)
                        truth = any(_rule_matches(r, a.info, domain, direction)
                                    for r in actual)
                        if view != truth:
                            self.fail(f"node {a.index} believes node {b.index} "
                                      f"{'allows' if view else 'refuses'} {direction} "
                                      f"{domain}; it {'allows' if truth else 'refuses'}")

    def check_convergence(self) -> None:
        """Every version that may flow A -> B is accounted for at B; two-way shares with
        no pending conflict hold the same version on both sides."""
        flows: dict[tuple[int, int], dict[str, bytes]] = {}
        for a in self.nodes:
            for b in self.nodes:
                if a is b:
                    continue
                accept = b.policy.policies()
                moved: dict[str, bytes] = {}
                for _, gene in self.shown(a, b.info).values():
                    if not accept.allowed_to_receive(gene, a.peer, a.org, a.region).allowed:
                        continue
                    if gene.origin == b.peer and b.cortex.get_gene(gene.id) is None:
                        # A peer's edit of a form derived for it (anonymised, re-scoped):
                        # its origin never held that id and refuses a gene "of its own"
                        # it did not author (`refusal_against`). Seed 241.
                        self.stats["derived_edits_not_returned"] += 1
                        continue
                    self.account(b, gene, a)
                    head = a.cortex.get_gene(gene.id)
                    if head is not None and head.version_hash == gene.version_hash:
                        moved[gene.id] = gene.version_hash  # sent as it is, not derived
                flows[(a.index, b.index)] = moved
                self.stats["flows_checked"] += len(moved)
        for (i, j), moved in sorted(flows.items()):
            if i > j:
                continue
            back = flows[(j, i)]
            a, b = self.nodes[i], self.nodes[j]
            pending = {c.gene_id for c in a.store.conflicts()} | {
                c.gene_id for c in b.store.conflicts()}
            for gene_id in sorted(set(moved) & set(back) - pending):
                if moved[gene_id] != back[gene_id]:
                    self.fail(f"nodes {i} and {j} share gene {gene_id} both ways with no "
                              "conflict pending, yet hold different versions")
                self.stats["converged_pairs"] += 1

    def account(self, b: SimNode, gene: Gene, a: SimNode) -> None:
        head = b.cortex.get_gene(gene.id)
        where = f"gene {gene.id} v{gene.version} ({gene.domain}) from {a.index} at {b.index}"
        if head is None:
            self.fail(f"not converged: {where} never arrived")
        order = compare(head.vv, gene.vv)
        if order in (Order.EQUAL, Order.DESCENDS):
            if order is Order.EQUAL and head.version_hash != gene.version_hash and \
                    _stamp(head).lww_key < _stamp(gene).lww_key:
                self.fail(f"not converged: {where}: equal vectors, lower version kept")
            return
        if order is Order.CONCURRENT:
            if gene.domain in LWW_DOMAINS:
                if _stamp(head).lww_key > _stamp(gene).lww_key:
                    return
                self.fail(f"not converged: {where}: LWW kept the lower of two versions")
            for conflict in b.store.conflicts():
                if conflict.gene_id == gene.id and descends(conflict.remote.vv, gene.vv):
                    return
            self.fail(f"lost: {where} is concurrent with the head and in no conflict queue")
        self.fail(f"not converged: {where}: the receiver's head is older")

    # -- a whole run -------------------------------------------------------------------
    def run(self) -> SimResult:
        try:
            for _ in range(self.cfg.steps):
                self.step()
            self.settle()
        finally:
            for node in self.nodes:
                node.close()
        digest = hashlib.sha256("\n".join(self.trace).encode()).hexdigest()
        return SimResult(self.seed, digest, self.step_no, self.faults, self.stats)


@contextlib.contextmanager
def scratch_root() -> Iterator[Path]:
    """A directory for the run's Cortexes: tmpfs when there is one (fsync is free and
    the run is ~10x faster; a crash here is a process crash, which loses no committed
    LMDB transaction either way)."""
    base = os.environ.get("GD_SIM_SCRATCH") or (  # a sweep's own parent (sweep.py)
        "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None)
    path = Path(tempfile.mkdtemp(prefix="fedsim-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run(seed: int, config: FedConfig | None = None,
        simulation: type[Simulation] = Simulation) -> SimResult:
    """Run one seed; raises `SimFailure` ("FAILED SEED=...") when an invariant breaks."""
    with scratch_root() as root:
        return simulation(seed, root, config).run()


replay = run


def main(argv: list[str]) -> int:
    """``python tests/sim/fedsim.py SEEDS [FIRST]``: run many seeds, print failures."""
    count = int(argv[1]) if len(argv) > 1 else 100
    first = int(argv[2]) if len(argv) > 2 else 0
    failed = 0
    for seed in range(first, first + count):
        try:
            run(seed)
        except SimFailure as exc:
            failed += 1
            print(exc)
    print(f"{count - failed}/{count} seeds passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
