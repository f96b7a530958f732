"""The region's ledger, ordered by Raft over libp2p (`/gd/raft/1.0.0`).

The sans-I/O core (`gd.ledger.raft`) decides everything about order; this module feeds
it and carries its bytes, the way `node/services/sync_service.py` carries sync's:

* **members** — the voters are `cfg.ledger_voters` (peer ids). Every founding voter
  bootstraps the same configuration (`bootstrap_state`). Every other node of the region
  whose config names the same voters is a *learner*: it announces itself in its gossip,
  and the leader adds it with `ConfChange ADD_LEARNER` when it hears it. With no voters
  configured the node is a *region of one*: no Raft, statements go straight to the local
  ledger exactly as before (`gd.node.services.recorder`).
* **the loop** — one task owns the `RaftNode`: it ticks every `TICK_S`, steps inbound
  messages, proposes queued statements in batches, and handles each `Ready` in the order
  docs/raft.md requires: persist (`LmdbRaftStorage`, fsync'd, in a worker thread), send,
  restore a snapshot, apply the committed entries to the `Ledger`, `advance`.
* **streams** — one long-lived outbound stream per peer carries our messages to it (its
  own writer task, a bounded queue, bounded writes); inbound streams are read by the
  daemon's guarded handler. Each message's `frm` must be the stream's authenticated peer.
  Raft tolerates loss, so a full queue or a broken stream just drops messages.
* **entries** — a Raft entry's data is a batch of signed, unsequenced `LedgerEntry`
  statements (a msgpack list of their encodings). Applying appends them with
  `Ledger.append_batch`, which sequences them identically on every node; the applied
  order *is* the ledger order. The leader signs a tree head after each applied batch.
* **proposals** — statements queued here (from `ledger_append` / `ledger_submit`, from
  code in the daemon, and from the outbox the CLI fills while no daemon runs) are
  proposed in batches with (client_id, request_id) from the Raft sessions; a batch not
  committed after `RETRY_AFTER_S` is looked up and re-proposed with the same ids when the
  log does not know it (safe: committed duplicates are flagged, and the ledger itself
  deduplicates by (author, idempotency key)).
* **cross-checking** — every stream carries our latest signed tree head as gossip every
  `GOSSIP_INTERVAL_S` (also the keepalive that keeps the peer's read timeout from
  firing). Received heads are stored (`Ledger.add_head`) and fed to a `ForkMonitor`;
  consistency proofs are computed from our own copy of the log. Alarms are recorded
  (`Ledger.record_alarm`), logged and counted (`gd_ledger_fork_alarms`).
* **snapshots** — every `compact_every` applied entries the log is compacted; the
  snapshot's application state is a *pointer* (ledger size, root, Raft index), not the
  entries: a learner that installs it fetches the entries it lacks from a member
  (`LedgerFetch`), checks them against the root, and goes on from the snapshot's index.

Failure model and the reasons behind each limit: docs/ledger.md, "The region's ledger".
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import lmdb
import trio
from libp2p.custom_types import TProtocol
from prometheus_client import Counter, Gauge

from gd.crdt.hlc import HLC
from gd.genome import canonical
from gd.genome.errors import DecodeError
from gd.ledger.chain import AppendReceipt, AppendStatus
from gd.ledger.entry import EntryKind, LedgerEntry
from gd.ledger.errors import LedgerError, LocalLedgerError, RemoteLedgerError
from gd.ledger.forks import AlarmKind, ForkAlarm, ForkMonitor
from gd.ledger.raft import RaftConfig, RaftNode, Ready
from gd.ledger.raft_messages import (
    MAX_ENTRY_BYTES,
    AppendEntries,
    ConfChange,
    ConfChangeOp,
    Entry,
    Heartbeat,
    ProposalDropped,
    RaftLocalError,
    RaftRemoteError,
    Role,
    Snapshot,
)
from gd.ledger.raft_messages import Message as RaftMessage
from gd.ledger.raft_sessions import RequestState
from gd.ledger.sth import DEFAULT_LOG_ID, SignedTreeHead
from gd.node.net.host import to_id
from gd.node.net.membership import region_member
from gd.node.net.peers import PeerRecord
from gd.node.net.streams import FramedStream, StreamGone
from gd.node.services.ledger_group import CheckedStatements, GroupCommitter, check_signatures
from gd.node.services.recorder import OUTBOX_DB, OutboxRoute, Receipt
from gd.node.store.ledger_store import MAX_BATCH, Ledger
from gd.node.store.raft_lmdb import LmdbRaftStorage
from gd.protocol.errors import LocalProtocolError, RemoteProtocolError
from gd.protocol.wire import Message, message

if TYPE_CHECKING:
    from gd.node.daemon import Daemon

RAFT_PROTOCOL_ID: Final = TProtocol("/gd/raft/1.0.0")

# The core's clock: 100 ms ticks with 10-tick elections (gd.ledger.raft) give a 1-2 s
# failover, inside the 2 s target.
TICK_S: Final = 0.1
# Gossip of our latest signed head on every stream. It doubles as the keepalive: the
# peer's reader gives up after READ_TIMEOUT_S (10 s) of silence, and streams between two
# followers carry no Raft traffic at all.
GOSSIP_INTERVAL_S: Final = 1.0
# Opening a stream is ~10 ms on loopback; writing one batch of frames is bounded so a
# frozen peer (py-libp2p never notices one) cannot hold a writer forever.
OPEN_TIMEOUT_S: Final = 5.0
WRITE_TIMEOUT_S: Final = 5.0
# After a failed open, wait this long (doubling up to the max) before trying again.
REOPEN_BACKOFF_S: Final = 0.2
REOPEN_BACKOFF_MAX_S: Final = 5.0
# Messages queued per peer before we drop (Raft re-sends what matters). 4096 appends
# of 1 MiB would be 4 GiB: the byte bound below is what really limits memory.
PEER_QUEUE_MESSAGES: Final = 4096
PEER_QUEUE_BYTES: Final = 64 * 1024 * 1024
# Frames written in one `send`: large writes are what makes yamux fast, 4 MiB (one
# frame's limit) keeps one write's memory bounded.
WRITE_BATCH_BYTES: Final = 4 * 1024 * 1024
# Inbound messages waiting for the loop; beyond this they are dropped (a flood from a
# member cannot grow our memory; Raft recovers from the loss).
INBOUND_QUEUE: Final = 16_384
# A Raft entry holds one batch: at most this many statements and bytes. A statement is
# ~400-600 bytes; 512 KiB keeps an entry (and an AppendEntries frame) far inside the
# core's 1 MiB entry limit and the wire's 4 MiB frame.
MAX_BATCH_STATEMENTS: Final = 2000
MAX_BATCH_BYTES: Final = 512 * 1024
# Batches proposed and not yet applied, per node. Pipelining is what gives throughput;
# the bound keeps a node from flooding the leader (and the sessions' 1024-request window
# far from forgetting a request still in flight).
MAX_INFLIGHT_BATCHES: Final = 64
# Committed Raft entries (batches) the log may run ahead of the ledger before the loop
# waits for the applier: bounds memory and keeps `applied` close to `commit`.
MAX_APPLY_BACKLOG: Final = 256
# Digests of statements checked at submit, kept so their apply need not check again.
MAX_VERIFIED_REMEMBERED: Final = 100_000
# Statements queued here before submissions are refused (backpressure on callers).
MAX_QUEUED_STATEMENTS: Final = 200_000
# A batch not applied this long after proposing is looked up, and re-proposed with the
# same ids if the log does not know it: two election timeouts (2 x 1-2 s).
RETRY_AFTER_S: Final = 3.0
# How long `ledger_append` / `ledger_submit` wait for the commit by default.
APPEND_TIMEOUT_S: Final = 10.0
# Applied Raft entries between compactions. Each entry is a batch, so 10k entries are
# up to 20M statements; the log below the snapshot is then dropped.
COMPACT_EVERY: Final = 10_000
# A fetch reply (snapshot catch-up) carries at most this many bytes of entries.
FETCH_CHUNK_BYTES: Final = 2 * 1024 * 1024
FETCH_CHUNK_ENTRIES: Final = 10_000
FETCH_TIMEOUT_S: Final = 30.0
# Heads from gossip beyond our log, kept to store once we have caught up.
MAX_FUTURE_HEADS: Final = 64
# Consistency checks run per loop iteration, so a burst of heads cannot stall the loop.
MAX_PROOF_CHECKS: Final = 8
# Learner slots (issue 11, item 6): a region's non-voting members. The mesh keeps at most
# 12 in-region peers (node/net/mesh.py), so 16 covers every honest member with room for
# churn; beyond it a new learner gets a slot only by evicting one idle for LEARNER_IDLE_S.
MAX_LEARNERS: Final = 16
# Learners gossip every GOSSIP_INTERVAL_S while connected; one silent this long is gone.
LEARNER_IDLE_S: Final = 600.0

NET_META_DB: Final = b"ledger_net"
_APPLIED_KEY: Final = b"applied"
_MIGRATED_KEY: Final = b"migrated"


def region_log_id(region: str) -> str:
    """The log id signed into a region's tree heads: heads of two regions never mix."""
    return f"region:{region}"


def slot_key(author: str, idempotency_key: str) -> bytes:
    """The outbox key of a statement (the same shape as the ledger's idempotency index)."""
    return author.encode() + b"\x00" + idempotency_key.encode()


def encode_batch(statements: Sequence[LedgerEntry]) -> bytes:
    """A Raft entry's data: the statements' canonical encodings, in order."""
    return canonical.encode_plain([s.encoded for s in statements])


def decode_batch(data: bytes) -> list[LedgerEntry]:
    """The statements of a committed entry. Every node decodes the same bytes, so what is
    dropped here (malformed, sequenced, unsigned) is dropped identically everywhere."""
    try:
        items = canonical.decode(data)
    except DecodeError:
        return []
    if not isinstance(items, list):
        return []
    out = []
    for raw in items:
        if not isinstance(raw, bytes):
            continue
        try:
            entry = LedgerEntry.decode(raw)
        except RemoteLedgerError:
            continue
        if not entry.is_sequenced:
            out.append(entry)
    return out


def receipt_to_plain(receipt: AppendReceipt) -> dict[str, Any]:
    return {"status": receipt.status.value, "index": receipt.index,
            "entry_hash": receipt.entry_hash.hex(), "author": receipt.author,
            "idempotency_key": receipt.idempotency_key}


def receipt_from_plain(data: dict[str, Any]) -> AppendReceipt:
    return AppendReceipt(AppendStatus(data["status"]), int(data["index"]),
                         bytes.fromhex(data["entry_hash"]), data["author"],
                         data["idempotency_key"])


# ---- wire messages -------------------------------------------------------------------


@message
@dataclass(frozen=True)
class RaftFrame(Message):
    """One Raft message (`gd.ledger.raft_messages`, canonical msgpack)."""

    TYPE = "gd.raft.msg"
    data: bytes


@message
@dataclass(frozen=True)
class LedgerGossip(Message):
    """Our latest signed tree head (empty: none yet) and the voters our config names: a
    region member that is not a voter asks to be a learner by sending this."""

    TYPE = "gd.raft.gossip"
    head: bytes
    voters: tuple[str, ...]


@message
@dataclass(frozen=True)
class LedgerFetch(Message):
    """Send me ledger entries [start, stop) (snapshot catch-up)."""

    TYPE = "gd.raft.fetch"
    start: int
    stop: int


@message
@dataclass(frozen=True)
class LedgerChunk(Message):
    """Sequenced entries from `start` on (possibly fewer than asked), and the sender's size."""

    TYPE = "gd.raft.chunk"
    start: int
    entries: tuple[bytes, ...]
    size: int


# ---- bookkeeping ---------------------------------------------------------------------


class LedgerServiceError(RuntimeError):
    """A submission could not be taken or did not commit in time (a local condition:
    the control socket reports it; the caller retries with the same statements)."""


@dataclass
class _Waiter:
    statement: LedgerEntry
    done: trio.Event = field(default_factory=trio.Event)
    receipt: AppendReceipt | None = None


@dataclass
class _Batch:
    statements: list[LedgerEntry]
    data: bytes
    proposed_at: float


@dataclass
class _Link:
    """Our outbound stream to one peer and what waits to go on it."""

    queue: deque[bytes] = field(default_factory=deque)
    queued_bytes: int = 0
    wake: trio.Event = field(default_factory=trio.Event)
    fs: FramedStream | None = None
    retry_at: float = 0.0
    backoff: float = REOPEN_BACKOFF_S


@dataclass(frozen=True)
class SnapshotState:
    """The application state in a Raft snapshot: a pointer into the ledger."""

    size: int
    root: bytes
    applied: int

    def encode(self) -> bytes:
        return canonical.encode({"applied": self.applied, "root": self.root,
                                 "size": self.size})

    @classmethod
    def decode(cls, data: bytes) -> SnapshotState:
        try:
            obj = canonical.decode(data)
            if not isinstance(obj, dict) or set(obj) != {"applied", "root", "size"}:
                raise ValueError("expected {applied, root, size}")
            size, applied, root = obj["size"], obj["applied"], obj["root"]
            if type(size) is not int or type(applied) is not int or size < 0 or applied < 0 \
                    or not isinstance(root, bytes) or len(root) != 32:
                raise ValueError("bad field types")
        except (DecodeError, ValueError) as exc:
            raise RemoteLedgerError(f"snapshot state: {exc}") from None
        return cls(size, root, applied)


@dataclass
class ApplyResult:
    receipts: list[tuple[LedgerEntry, AppendReceipt]]
    head: SignedTreeHead | None
    size: int


# ---- the service ---------------------------------------------------------------------


class LedgerService:
    """The ledger of one daemon: region member over Raft, or a region of one.

    Construction registers the control methods (and, for a member, the protocol);
    `run()` drives everything until cancelled with the daemon.
    """

    def __init__(self, daemon: Daemon, *, seed: int | None = None,
                 compact_every: int = COMPACT_EVERY,
                 wall_ms: Callable[[], int] | None = None) -> None:
        self.daemon = daemon
        self.key = daemon.key
        self.peer_id = daemon.key.peer_id
        self.env: lmdb.Environment = daemon.cortex.env
        self.log = daemon.log.bind(component="ledger")
        self.region = daemon.cfg.region
        self.voters: frozenset[str] = frozenset(daemon.cfg.ledger_voters)
        self._learner_seen: dict[str, float] = {}  # learner -> last gossip (monotonic)
        self._started = time.monotonic()
        self.solo = not self.voters
        self.log_id = DEFAULT_LOG_ID if self.solo else region_log_id(self.region)
        self.compact_every = compact_every
        self._wall_ms = wall_ms or (lambda: int(time.time() * 1000))
        self._clock = HLC(0, 0)
        self.ledger = Ledger(self.env)
        self._outbox = self.env.open_db(OUTBOX_DB)
        self._meta = self.env.open_db(NET_META_DB)
        # (client_id, request_id): the client id carries a per-start nonce, so a restarted
        # node never reuses a request id the sessions remember as committed.
        self.client_id = f"{self.peer_id}/{os.urandom(8).hex()}"
        self._next_request = 1
        self._solo_group: GroupCommitter[LedgerEntry, AppendReceipt] = GroupCommitter(
            self._solo_commit, MAX_BATCH)
        self._queue: deque[LedgerEntry] = deque()
        self._queued: set[tuple[str, str]] = set()
        self._waiters: dict[tuple[str, str], list[_Waiter]] = {}
        self._inflight: dict[int, _Batch] = {}
        self._verified = CheckedStatements(MAX_VERIFIED_REMEMBERED)
        self._to_apply: list[tuple[list[Entry], frozenset[int], bool]] = []
        self._apply_wake = trio.Event()
        self._apply_done = trio.Event()
        self._apply_queued_to = 0
        self._saved_vote: tuple[int, str | None] = (0, None)
        self._inbound: deque[RaftMessage | str] = deque()
        self._wake = trio.Event()
        self._links: dict[str, _Link] = {}
        self._nursery: trio.Nursery | None = None
        self._head_bytes = b""
        self._future_heads: dict[int, tuple[SignedTreeHead, str]] = {}
        self._alarm_pairs: set[tuple[bytes, bytes]] = set()
        self.alarms_raised = 0
        self.node: RaftNode | None = None
        self.storage: LmdbRaftStorage | None = None
        self.applied_index = 0
        self.started = trio.Event()
        registry = daemon.metrics.registry
        self.m_alarms = Counter("gd_ledger_fork_alarms", "Fork alarms raised (gossiped "
                                "tree heads that do not fit together)", registry=registry)
        self.m_committed = Counter("gd_ledger_committed", "Statements applied to the "
                                   "ledger from the region's log", registry=registry)
        self.m_dropped = Counter("gd_raft_dropped", "Raft messages dropped (queue full, "
                                 "no stream, not a member)", ["reason"], registry=registry)
        self.m_term = Gauge("gd_raft_term", "Current Raft term", registry=registry)
        self.m_leader = Gauge("gd_raft_is_leader", "1 while this node leads the region",
                              registry=registry)
        self.m_commit = Gauge("gd_raft_commit", "Raft commit index", registry=registry)
        if not self.solo:
            self.monitor = ForkMonitor(self.log_id, trusted_signers=self.voters)
            self.storage = LmdbRaftStorage(self.env)
            self._migrate_local_ledger()
            state = self.storage.load()
            if state.is_empty and self.peer_id in self.voters:
                self.storage.bootstrap(self.voters)
                state = self.storage.load()
            self.node = RaftNode(self.peer_id, state, RaftConfig(
                seed=seed if seed is not None else int.from_bytes(os.urandom(8), "big")))
            self.applied_index = self._stored_applied()
            self._apply_queued_to = self.applied_index
            self._saved_vote = (state.hard_state.term, state.hard_state.vote)
            daemon.register_protocol(RAFT_PROTOCOL_ID, self.serve)
        self._load_outbox()
        daemon.methods.add("ledger_append", self._control_append)
        daemon.methods.add("ledger_submit", self._control_submit)
        daemon.methods.add("ledger_lookup", self._control_lookup)
        daemon.methods.add("ledger_status", self._control_status)
        sovereignty = getattr(daemon, "sovereignty", None)
        if sovereignty is not None:
            # Approvals and agreements recorded inside the daemon go through us, never
            # through our own control socket.
            sovereignty.recorder.route = self.route()

    # -- startup -----------------------------------------------------------------------

    def _stored_applied(self) -> int:
        with self.env.begin() as txn:
            raw = txn.get(_APPLIED_KEY, db=self._meta)
        return int.from_bytes(raw, "big") if raw else 0

    def _migrate_local_ledger(self) -> None:
        """A node that kept a ledger alone and now joins a region: its local statements
        are proposed to the region (moved to the outbox) and the local tables emptied
        in the same transaction, so the region's order is the only one on this node."""
        assert self.storage is not None
        if not self.storage.load().is_empty or self.ledger.size == 0:
            return
        moved = 0
        with self.env.begin(write=True) as txn:
            if txn.get(_MIGRATED_KEY, db=self._meta) is not None:
                return
            for raw in self.ledger.take_all(txn):
                statement = LedgerEntry.decode(raw).unsequenced()
                txn.put(slot_key(statement.author, statement.idempotency_key),
                        statement.encoded, db=self._outbox)
                moved += 1
            txn.put(_MIGRATED_KEY, moved.to_bytes(8, "big"), db=self._meta)
        self.log.warning("ledger.migrated_to_region", statements=moved, region=self.region,
                         note="the local ledger's statements are proposed to the region")

    def _load_outbox(self) -> None:
        with self.env.begin() as txn:
            raws = [bytes(v) for v in txn.cursor(db=self._outbox).iternext(keys=False)]
        for raw in raws:
            try:
                statement = LedgerEntry.decode(raw)
            except RemoteLedgerError as exc:
                self.log.error("ledger.outbox_corrupt", error=str(exc))
                continue
            self._enqueue(statement)
        if raws:
            self.log.info("ledger.outbox_loaded", statements=len(raws))

    # -- public API (trio thread) --------------------------------------------------------

    def stamp(self) -> int:
        self._clock = self._clock.now(self._wall_ms())
        return self._clock.packed

    def route(self) -> ServiceRoute:
        """A recorder route for code in this daemon's worker threads."""
        return ServiceRoute(self, trio.lowlevel.current_trio_token())

    def head(self) -> tuple[int, bytes]:
        """(size, root) of the local copy, for the handshake."""
        size = self.ledger.size
        return size, self.ledger.root(size)

    async def append(self, kind: EntryKind | str, payload_hash: bytes,
                     summary: dict[str, Any] | None = None, idempotency_key: str | None = None,
                     timeout_s: float = APPEND_TIMEOUT_S) -> AppendReceipt:
        """Sign one statement as this node and wait until the region commits it.

        A retry with the same key while the first is in flight joins it; after it
        committed, the retry gets its receipt (DUPLICATE, as the recorder does)."""
        key_text = idempotency_key or payload_hash.hex()
        slot = (self.peer_id, key_text)
        queued = self._waiting_statement(slot)
        if queued is not None:
            return (await self.submit([queued], timeout_s))[0]
        existing = await trio.to_thread.run_sync(self.ledger.find, *slot)
        if existing is not None:
            same = existing.kind == EntryKind(kind) and existing.payload_hash == payload_hash
            assert existing.index is not None
            return AppendReceipt(AppendStatus.DUPLICATE if same else AppendStatus.CONFLICT,
                                 existing.index, existing.entry_hash, existing.author, key_text)
        statement = LedgerEntry.create(self.key, kind, self.stamp(), payload_hash, summary,
                                       key_text)
        return (await self.submit([statement], timeout_s))[0]

    def _waiting_statement(self, slot: tuple[str, str]) -> LedgerEntry | None:
        waiters = self._waiters.get(slot)
        if waiters:
            return waiters[0].statement
        for statement in self._queue:
            if (statement.author, statement.idempotency_key) == slot:
                return statement
        for batch in self._inflight.values():
            for statement in batch.statements:
                if (statement.author, statement.idempotency_key) == slot:
                    return statement
        return None

    async def submit(self, statements: Sequence[LedgerEntry],
                     timeout_s: float = APPEND_TIMEOUT_S) -> list[AppendReceipt]:
        """Order signed statements on the region's ledger; return once each is applied
        here (a receipt each). LedgerServiceError on timeout: retry with the same
        statements (they are deduplicated), or ask `lookup`."""
        for statement in statements:
            if statement.is_sequenced:
                raise LocalLedgerError("submit unsequenced statements")
        # Ed25519 across cores in worker threads: the event loop keeps serving the
        # network and other callers meanwhile (it used to verify here, one by one).
        bad = await trio.to_thread.run_sync(check_signatures, statements)
        if bad:
            statements[bad[0]].verify_signature()  # raises with the reason
        self._verified.remember(statements)
        if self.solo:
            return await self._append_solo(statements, checked=True)
        if len(self._queue) + len(statements) > MAX_QUEUED_STATEMENTS:
            raise LedgerServiceError(f"{len(self._queue)} statements already queued; retry "
                                     "later")
        waiters = []
        for statement in statements:
            waiter = _Waiter(statement)
            self._waiters.setdefault((statement.author, statement.idempotency_key),
                                     []).append(waiter)
            waiters.append(waiter)
            self._enqueue(statement)
        self._wake.set()
        try:
            with trio.fail_after(timeout_s):
                for waiter in waiters:
                    await waiter.done.wait()
        except trio.TooSlowError:
            raise LedgerServiceError(
                f"not committed within {timeout_s} s (role {self._role()}, leader "
                f"{self._leader() or 'unknown'}); retry with the same statements or "
                "ask ledger_lookup") from None
        finally:
            for waiter in waiters:
                slot = (waiter.statement.author, waiter.statement.idempotency_key)
                left = [w for w in self._waiters.get(slot, []) if w is not waiter]
                if left:
                    self._waiters[slot] = left
                else:
                    self._waiters.pop(slot, None)
        receipts = [w.receipt for w in waiters]
        assert all(r is not None for r in receipts)
        return await trio.to_thread.run_sync(self._same_event_is_duplicate, statements,
                                             receipts)

    def _same_event_is_duplicate(self, statements: Sequence[LedgerEntry],
                                 receipts: Sequence[AppendReceipt | None]) -> list[AppendReceipt]:
        """A retried event signed twice (two clock stamps) holds its key with the first
        copy: report DUPLICATE, not CONFLICT, when kind and payload are the same."""
        out = []
        for statement, receipt in zip(statements, receipts, strict=True):
            assert receipt is not None
            if receipt.status is AppendStatus.CONFLICT:
                existing = self.ledger.find(receipt.author, receipt.idempotency_key)
                if existing is not None and existing.kind == statement.kind \
                        and existing.payload_hash == statement.payload_hash:
                    receipt = AppendReceipt(AppendStatus.DUPLICATE, receipt.index,
                                            receipt.entry_hash, receipt.author,
                                            receipt.idempotency_key)
            out.append(receipt)
        return out

    async def _append_solo(self, statements: Sequence[LedgerEntry], *,
                           checked: bool = False) -> list[AppendReceipt]:
        """A region of one: concurrent callers share one transaction and one fsync
        (group commit) once the service runs; before that, a direct append."""
        if checked and self._solo_group.running:
            return await self._solo_group.submit(statements)
        return await trio.to_thread.run_sync(self.ledger_append_direct, statements)

    def _solo_commit(self, statements: list[LedgerEntry]) -> list[AppendReceipt]:
        return self.ledger_append_direct(statements, signatures_checked=True)

    def ledger_append_direct(self, statements: Sequence[LedgerEntry], *,
                             signatures_checked: bool = False) -> list[AppendReceipt]:
        """A region of one (any thread): append and sign a head, as before regions. The
        outbox slots are cleared in the append's own transaction (one fsync)."""
        receipts: list[AppendReceipt] = []
        for start in range(0, len(statements), MAX_BATCH):
            chunk = statements[start:start + MAX_BATCH]
            result = self.ledger.append_batch(
                chunk, head_key=self.key, timestamp=self._wall_ms(),
                signatures_checked=signatures_checked,
                also=functools.partial(self._forget_outbox_in, statements=chunk))
            receipts.extend(result.receipts)
        return self._same_event_is_duplicate(statements, receipts)

    def enqueue_many(self, statements: Sequence[LedgerEntry]) -> None:
        """Queue statements for proposing without waiting (trio thread)."""
        for statement in statements:
            self._enqueue(statement)
        self._wake.set()

    def lookup(self, author: str, idempotency_key: str) -> dict[str, Any]:
        """Did the statement under (author, key) commit? From the ledger, then from the
        Raft sessions for a batch of ours still in flight."""
        entry = self.ledger.find(author, idempotency_key)
        if entry is not None:
            return {"state": "committed", "index": entry.index,
                    "entry_hash": entry.entry_hash.hex()}
        slot = (author, idempotency_key)
        for request_id, batch in self._inflight.items():
            if any((s.author, s.idempotency_key) == slot for s in batch.statements):
                raft = self.node.lookup(self.client_id, request_id) if self.node else None
                return {"state": "pending", "request_id": request_id,
                        "raft": raft.state.value if raft else None,
                        "raft_index": raft.index if raft else 0}
        if slot in self._queued:
            return {"state": "queued"}
        return {"state": "unknown"}

    def status(self, head: tuple[int, bytes] | None = None) -> dict[str, Any]:
        """Mode, queue and (for a member) Raft role, term, leader and indices."""
        size, root = head if head is not None else self.head()
        out: dict[str, Any] = {
            "mode": "solo" if self.solo else "raft", "log_id": self.log_id, "size": size,
            "root": root.hex(), "queued": len(self._queue), "inflight": len(self._inflight),
            "alarms": self.alarms_raised, "voters_configured": sorted(self.voters),
        }
        node = self.node
        if node is not None:
            out.update(role=node.role.value, term=node.term, leader=node.leader,
                       commit=node.log.committed, applied=node.log.applied,
                       last_index=node.log.last_index(),
                       snapshot_index=node.log.snapshot_index,
                       voters=sorted(node.conf.voters), learners=sorted(node.conf.learners))
        return out

    def _role(self) -> str:
        return self.node.role.value if self.node else "solo"

    def _leader(self) -> str | None:
        return self.node.leader if self.node else self.peer_id

    # -- control methods ---------------------------------------------------------------

    async def _control_append(self, kind: str, payload_hash: bytes,
                              summary: dict[str, Any] | None = None,
                              idempotency_key: str | None = None,
                              timeout_s: float = APPEND_TIMEOUT_S) -> dict[str, Any]:
        if not isinstance(payload_hash, bytes):
            raise ValueError("payload_hash must be bytes")
        try:
            receipt = await self.append(kind, payload_hash, summary, idempotency_key,
                                        float(timeout_s))
        except (LedgerError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        return receipt_to_plain(receipt)

    async def _control_submit(self, statements: list[bytes],
                              timeout_s: float = APPEND_TIMEOUT_S) -> list[dict[str, Any]]:
        if not isinstance(statements, list) or not all(isinstance(s, bytes)
                                                       for s in statements):
            raise ValueError("statements must be a list of encoded ledger entries")
        try:
            decoded = [LedgerEntry.decode(s) for s in statements]
            receipts = await self.submit(decoded, float(timeout_s))
        except LedgerError as exc:
            raise ValueError(str(exc)) from None
        return [receipt_to_plain(r) for r in receipts]

    async def _control_lookup(self, idempotency_key: str, author: str | None = None
                              ) -> dict[str, Any]:
        return self.lookup(author or self.peer_id, idempotency_key)

    async def _control_status(self) -> dict[str, Any]:
        return self.status(await trio.to_thread.run_sync(self.head))

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Drive the service until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.solo:
                nursery.start_soon(self._solo_group.run)
                await self._run_solo()
                return
            await self._catch_up_on_start()
            nursery.start_soon(self._applier)
            nursery.start_soon(self._gossip_loop)
            self.started.set()
            await self._loop()

    async def _run_solo(self) -> None:
        """A region of one: flush whatever the outbox holds, then nothing to drive."""
        if self._queue:
            statements = list(self._queue)
            self._queue.clear()
            self._queued.clear()
            await self._append_solo(statements)
        self.started.set()
        await trio.sleep_forever()

    async def _catch_up_on_start(self) -> None:
        """A snapshot installed but not yet restored (a crash mid-restore): restore it
        before applying anything after it."""
        assert self.node is not None
        snap = self.node.snapshot
        if snap.index > self.applied_index and snap.data:
            await self._restore(snap, None)

    async def _loop(self) -> None:
        node = self.node
        assert node is not None
        next_tick = trio.current_time() + TICK_S
        while True:
            with trio.move_on_at(next_tick):
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            if now >= next_tick:
                node.tick()
                next_tick = max(next_tick + TICK_S, now)
            self._step_inbound()
            self._propose_queued(now)
            self._retry_stale(now)
            while node.has_ready():
                await self._handle_ready(node.ready())
            await self._maybe_compact()
            self.m_term.set(node.term)
            self.m_leader.set(1 if node.is_leader else 0)
            self.m_commit.set(node.log.committed)

    def _step_inbound(self) -> None:
        node = self.node
        assert node is not None
        while self._inbound:
            item = self._inbound.popleft()
            if isinstance(item, str):
                self._add_learner(item)
                continue
            try:
                node.step(item)
            except RaftRemoteError as exc:
                self.m_dropped.labels(reason="invalid").inc()
                self.log.warning("raft.bad_message", peer=item.frm, error=str(exc)[:200])

    def _add_learner(self, peer: str) -> None:
        node = self.node
        assert node is not None
        if not node.is_leader or peer in node.conf.members:
            return
        change = ConfChange(ConfChangeOp.ADD_LEARNER, peer)
        if len(node.conf.learners) >= MAX_LEARNERS:
            idle = self._idle_learner(node.conf.learners)
            if idle is None:
                self.m_dropped.labels(reason="learners_full").inc()
                return  # every slot in use by a live learner: refused
            change = ConfChange(ConfChangeOp.REMOVE_NODE, idle)  # the peer asks again
        try:
            node.propose_conf_change(change)
        except RaftLocalError:
            return  # a change is pending; the peer's next gossip asks again
        self.log.info("raft.add_learner" if change.node_id == peer else "raft.evict_learner",
                      peer=change.node_id)

    def _idle_learner(self, learners: Iterable[str]) -> str | None:
        """The learner silent longest, if silent for LEARNER_IDLE_S (one we have not heard
        since we started counts from then)."""
        now = time.monotonic()
        seen = {p: self._learner_seen.get(p, self._started) for p in learners}
        oldest = min(seen, key=lambda p: (seen[p], p), default=None)
        if oldest is None or now - seen[oldest] < LEARNER_IDLE_S:
            return None
        return oldest

    def _member(self, rec: PeerRecord) -> bool:
        """Region membership for the ledger: node/net/membership.py decides."""
        return region_member(rec, self.region, self.voters)

    def _enqueue(self, statement: LedgerEntry) -> None:
        slot = (statement.author, statement.idempotency_key)
        if slot in self._queued:
            return
        self._queued.add(slot)
        self._queue.append(statement)

    def _propose_queued(self, now: float) -> None:
        node = self.node
        assert node is not None
        while self._queue and len(self._inflight) < MAX_INFLIGHT_BATCHES:
            take: list[LedgerEntry] = []
            nbytes = 0
            while self._queue and len(take) < MAX_BATCH_STATEMENTS:
                size = len(self._queue[0].encoded) + 8
                if take and nbytes + size > MAX_BATCH_BYTES:
                    break
                take.append(self._queue.popleft())
                nbytes += size
            data = encode_batch(take)
            request_id = self._next_request
            try:
                node.propose(data, self.client_id, request_id)
            except ProposalDropped:
                self._queue.extendleft(reversed(take))
                return
            self._next_request += 1
            self._inflight[request_id] = _Batch(take, data, now)

    def _retry_stale(self, now: float) -> None:
        node = self.node
        assert node is not None
        for request_id, batch in list(self._inflight.items()):
            if now - batch.proposed_at < RETRY_AFTER_S:
                continue
            status = node.lookup(self.client_id, request_id)
            batch.proposed_at = now
            if status.state is RequestState.COMMITTED:
                self._inflight.pop(request_id, None)
                continue
            if status.state is RequestState.PENDING:
                continue
            rid = request_id
            if status.state is RequestState.EXPIRED:
                # The sessions forgot it: a new id; the ledger still dedups statements.
                rid = self._next_request
                self._next_request += 1
            try:
                node.propose(batch.data, self.client_id, rid)
            except ProposalDropped:
                continue
            if rid != request_id:
                self._inflight[rid] = self._inflight.pop(request_id)
            self.log.info("raft.reproposed", request_id=rid, statements=len(batch.statements))

    async def _handle_ready(self, rd: Ready) -> None:
        """Persist, send, restore, hand the committed entries to the applier, advance.

        A leader's appends go out *before* its own write (Raft thesis 10.2.1, as etcd
        does): the leader counts itself towards a commit only after `advance`, so an
        entry commits only once a quorum has it on disk. Votes and acknowledgements
        still wait for the write. Applying runs in its own task (`_applier`), so the next
        Ready is persisted while this one's statements are appended to the ledger."""
        node = self.node
        storage = self.storage
        assert node is not None and storage is not None
        early = self._can_send_early(rd)
        if early:
            for msg in rd.messages:
                self._send(msg)
        if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
            await trio.to_thread.run_sync(storage.save, rd.hard_state, rd.entries,
                                          rd.snapshot)
            if rd.hard_state is not None:
                self._saved_vote = (rd.hard_state.term, rd.hard_state.vote)
        if not early:
            for msg in rd.messages:
                self._send(msg)
        if rd.snapshot is not None:
            await self._wait_applied(0)
            await self._restore(rd.snapshot, rd.leader)
        if rd.committed_entries:
            await self._queue_apply(rd)
        node.advance(rd)

    def _can_send_early(self, rd: Ready) -> bool:
        """Only a leader's appends and heartbeats, with term and vote already on disk."""
        if rd.role is not Role.LEADER or rd.snapshot is not None or not rd.messages:
            return False
        if rd.hard_state is not None and \
                (rd.hard_state.term, rd.hard_state.vote) != self._saved_vote:
            return False
        return all(isinstance(m, AppendEntries | Heartbeat) for m in rd.messages)

    # -- applying ----------------------------------------------------------------------

    async def _queue_apply(self, rd: Ready) -> None:
        for entry in rd.committed_entries:
            if entry.client_id == self.client_id:
                self._inflight.pop(entry.request_id, None)
        entries = [e for e in rd.committed_entries if e.index > self._apply_queued_to]
        if not entries:
            return
        self._apply_queued_to = entries[-1].index
        self._to_apply.append((entries, rd.duplicates, rd.role is Role.LEADER))
        self._apply_wake.set()
        # Backpressure: the log may run ahead of the ledger by a bounded amount only.
        await self._wait_applied(MAX_APPLY_BACKLOG)

    async def _wait_applied(self, backlog: int) -> None:
        """Until at most `backlog` committed Raft entries wait to be applied."""
        while self._apply_queued_to - self.applied_index > backlog:
            await self._apply_done.wait()

    async def _applier(self) -> None:
        """Apply everything committed since the last apply in one go (group commit)."""
        while True:
            if not self._to_apply:
                await self._apply_wake.wait()
                self._apply_wake = trio.Event()
                continue
            items, self._to_apply = self._to_apply, []
            entries = [e for its, _, _ in items for e in its]
            duplicates = frozenset().union(*(d for _, d, _ in items))
            await self._apply(entries, duplicates, items[-1][2])
            done, self._apply_done = self._apply_done, trio.Event()
            done.set()

    async def _apply(self, entries: list[Entry], duplicates: frozenset[int],
                     sign: bool) -> None:
        entries = [e for e in entries if e.index > self.applied_index]
        if not entries:
            return
        result = await trio.to_thread.run_sync(self._apply_sync, entries, duplicates, sign)
        self.applied_index = entries[-1].index
        for _statement, receipt in result.receipts:
            slot = (receipt.author, receipt.idempotency_key)
            self._queued.discard(slot)
            for waiter in self._waiters.get(slot, []):
                if not waiter.done.is_set():
                    waiter.receipt = receipt
                    waiter.done.set()
        if result.receipts:
            self.m_committed.inc(len(result.receipts))
        self.daemon.metrics.ledger_height.set(result.size)
        if result.head is not None:
            self._head_bytes = result.head.encode()
            await self._observe(result.head, "local")
        await self._store_future_heads(result.size)
        await self._check_pending_proofs(result.size)

    def _apply_sync(self, entries: Sequence[Entry], duplicates: frozenset[int],
                    sign: bool) -> ApplyResult:
        """Worker thread: append the committed batches, in log order, with the applied
        index and the outbox clean-up in the same durable transaction (one fsync per
        group; more only past MAX_BATCH statements). Signatures are checked across
        cores first; a statement with a bad one (a member proposed garbage) is dropped,
        identically on every node, and the rest appended."""
        statements: list[LedgerEntry] = []
        for entry in entries:
            if entry.index in duplicates or not entry.client_id or not entry.data:
                continue
            statements.extend(decode_batch(entry.data))
        unchecked = self._verified.unchecked(statements)  # not checked at submit here
        bad = {unchecked[i] for i in check_signatures([statements[i] for i in unchecked])}
        for i in sorted(bad):
            self.log.error("ledger.bad_statement", author=statements[i].author,
                           key=statements[i].idempotency_key)
        if bad:
            statements = [s for i, s in enumerate(statements) if i not in bad]
        applied = entries[-1].index.to_bytes(8, "big")
        chunks = [statements[i:i + MAX_BATCH] for i in range(0, len(statements), MAX_BATCH)]
        pairs: list[tuple[LedgerEntry, AppendReceipt]] = []
        head = None
        for n, chunk in enumerate(chunks):
            final = n == len(chunks) - 1

            def also(txn: lmdb.Transaction, chunk: list[LedgerEntry] = chunk,
                     final: bool = final) -> None:
                self._forget_outbox_in(txn, chunk)
                if final:
                    txn.put(_APPLIED_KEY, applied, db=self._meta)

            result = self.ledger.append_batch(
                chunk, head_key=self.key if sign and final else None,
                timestamp=self._wall_ms(), log_id=self.log_id, signatures_checked=True,
                also=also)
            pairs.extend(zip(chunk, result.receipts, strict=True))
            head = result.head or head
        if not chunks:
            with self.env.begin(write=True) as txn:
                txn.put(_APPLIED_KEY, applied, db=self._meta)
        return ApplyResult(pairs, head, self.ledger.size)

    def _forget_outbox_in(self, txn: lmdb.Transaction,
                          statements: Iterable[LedgerEntry]) -> None:
        for statement in statements:
            txn.delete(slot_key(statement.author, statement.idempotency_key), db=self._outbox)

    # -- snapshots ---------------------------------------------------------------------

    async def _maybe_compact(self) -> None:
        node = self.node
        storage = self.storage
        assert node is not None and storage is not None
        if node.log.applied - node.log.snapshot_index < self.compact_every:
            return
        if node.log.applied > self.applied_index:
            # The applier is behind: the snapshot's pointer must describe the ledger at
            # the snapshot's index, so let it catch up first (once per COMPACT_EVERY).
            await self._wait_applied(0)
        size, root = await trio.to_thread.run_sync(self.head)
        snap = node.compact(SnapshotState(size, root, node.log.applied).encode())
        await trio.to_thread.run_sync(storage.compact, snap)
        self.log.info("raft.compacted", index=snap.index, ledger_size=size)

    async def _restore(self, snap: Snapshot, source: str | None) -> None:
        """Bring the ledger to the snapshot's state: fetch the entries we lack from a
        member, check the root, and remember the snapshot's index as applied."""
        state = SnapshotState.decode(snap.data)
        attempt = 0
        while True:
            size = await trio.to_thread.run_sync(lambda: self.ledger.size)
            if size >= state.size:
                break
            peers = [p for p in ([source] if source else []) +
                     sorted(snap.conf.voters | self.voters) if p and p != self.peer_id]
            peer = peers[attempt % len(peers)] if peers else None
            attempt += 1
            if peer is None:
                raise LocalLedgerError("a snapshot with no member to fetch entries from")
            try:
                await self._fetch_from(peer, size, state.size)
            except (StreamGone, RemoteProtocolError, RemoteLedgerError, LocalLedgerError,
                    trio.TooSlowError) as exc:
                self.log.warning("raft.fetch_failed", peer=peer, error=str(exc)[:200])
                await trio.sleep(min(REOPEN_BACKOFF_MAX_S, REOPEN_BACKOFF_S * attempt))
        root = await trio.to_thread.run_sync(self.ledger.root, state.size)
        if root != state.root:
            # Our copy disagrees with the region's at the snapshot's size: a fork that no
            # automatic step may paper over. Stop applying; the operator must look.
            self.log.error("ledger.snapshot_root_mismatch", size=state.size,
                           ours=root.hex(), snapshot=state.root.hex())
            raise LocalLedgerError(f"our ledger disagrees with the snapshot at size "
                                   f"{state.size}")

        def remember() -> None:
            with self.env.begin(write=True) as txn:
                txn.put(_APPLIED_KEY, snap.index.to_bytes(8, "big"), db=self._meta)

        await trio.to_thread.run_sync(remember)
        self.applied_index = max(self.applied_index, snap.index)
        self._apply_queued_to = max(self._apply_queued_to, self.applied_index)
        self.log.info("raft.snapshot_restored", index=snap.index, ledger_size=state.size)

    async def _fetch_from(self, peer: str, start: int, stop: int) -> None:
        fs = await self._open(peer)
        try:
            while start < stop:
                with trio.fail_after(FETCH_TIMEOUT_S):
                    reply = await fs.request(LedgerFetch(start=start, stop=stop))
                if not isinstance(reply, LedgerChunk) or reply.start != start \
                        or not reply.entries:
                    raise RemoteProtocolError("bad or empty ledger chunk")
                entries = [LedgerEntry.decode(raw) for raw in reply.entries]
                await trio.to_thread.run_sync(self._append_fetched, entries)
                start += len(entries)
        finally:
            await fs.close()

    def _append_fetched(self, entries: list[LedgerEntry]) -> None:
        self.ledger.append_batch(entries, log_id=self.log_id)

    def _chunk(self, start: int, stop: int) -> LedgerChunk:
        out: list[bytes] = []
        nbytes = 0
        stop = min(stop, start + FETCH_CHUNK_ENTRIES)
        for entry in self.ledger.entries(start, stop):
            if out and nbytes + len(entry.encoded) > FETCH_CHUNK_BYTES:
                break
            out.append(entry.encoded)
            nbytes += len(entry.encoded)
        return LedgerChunk(start=start, entries=tuple(out), size=self.ledger.size)

    # -- the network -------------------------------------------------------------------

    async def serve(self, fs: FramedStream, rec: PeerRecord) -> None:
        """Inbound /gd/raft: Raft messages and gossip from a peer, or a fetch."""
        peer = rec.peer_id
        while True:
            msg = await fs.receive()  # StreamGone when the peer closes
            if isinstance(msg, RaftFrame):
                self._on_frame(peer, rec, msg.data)
            elif isinstance(msg, LedgerGossip):
                await self._on_gossip(peer, rec, msg)
            elif isinstance(msg, LedgerFetch):
                if msg.start < 0 or msg.stop < msg.start:
                    raise RemoteProtocolError("bad fetch range")
                if not self._member(rec):  # refused, and the guard scores the peer
                    self.m_dropped.labels(reason="not_member").inc()
                    raise RemoteProtocolError(f"ledger fetch from a non-member of {self.region}")
                chunk = await trio.to_thread.run_sync(self._chunk, msg.start, msg.stop)
                await fs.send(chunk)
            else:
                raise RemoteProtocolError(f"unexpected {msg.TYPE} on {RAFT_PROTOCOL_ID}")

    def _on_frame(self, peer: str, rec: PeerRecord, data: bytes) -> None:
        node = self.node
        assert node is not None
        try:
            msg = RaftMessage.decode(data)
        except RaftRemoteError as exc:
            raise RemoteProtocolError(f"bad raft message: {exc}") from None
        if msg.frm != peer:
            # The core trusts `frm` for vote counting: only the stream's authenticated
            # peer may speak for itself.
            raise RemoteProtocolError(f"raft message from {msg.frm} on {peer}'s stream")
        if msg.to != self.peer_id:
            raise RemoteProtocolError(f"raft message for {msg.to} sent to us")
        if not self._member(rec) or peer not in (node.conf.members | self.voters):
            self.m_dropped.labels(reason="not_member").inc()
            return
        if len(self._inbound) >= INBOUND_QUEUE:
            self.m_dropped.labels(reason="inbound_full").inc()
            return
        self._inbound.append(msg)
        self._wake.set()

    async def _on_gossip(self, peer: str, rec: PeerRecord, msg: LedgerGossip) -> None:
        node = self.node
        assert node is not None
        same_region = self._member(rec)
        if peer in node.conf.learners:
            self._learner_seen[peer] = time.monotonic()
        if same_region and frozenset(msg.voters) == self.voters and node.is_leader \
                and peer not in node.conf.members and peer not in self.voters:
            self._inbound.append(peer)  # the loop proposes ADD_LEARNER
            self._wake.set()
        if not msg.head or not same_region:
            return
        try:
            head = SignedTreeHead.decode(msg.head)
        except RemoteLedgerError as exc:
            raise RemoteProtocolError(f"bad gossiped head: {exc}") from None
        if head.log_id != self.log_id:
            return
        try:
            head.verify(self.voters)
        except RemoteLedgerError as exc:
            raise RemoteProtocolError(f"gossiped head: {exc}") from None
        await self._observe(head, peer)
        await self._store_head(head, peer)

    async def _observe(self, head: SignedTreeHead, source: str) -> None:
        try:
            observation = self.monitor.observe(head, source)
        except RemoteLedgerError:
            return
        for alarm in observation.alarms:
            await self._alarm(alarm)
        if observation.requests:
            await self._check_pending_proofs(await trio.to_thread.run_sync(
                lambda: self.ledger.size))

    async def _store_head(self, head: SignedTreeHead, source: str) -> None:
        """Keep a head signed by the leader, after checking it against our own log."""
        def store() -> tuple[str, bytes | None]:
            size = self.ledger.size
            if head.size > size:
                return "future", None
            root = self.ledger.root(head.size)
            if root != head.root:
                return "fork", root
            self.ledger.add_head(head)
            return "stored", None

        outcome, ours = await trio.to_thread.run_sync(store)
        if outcome == "future":
            if len(self._future_heads) < MAX_FUTURE_HEADS or head.size in self._future_heads:
                self._future_heads[head.size] = (head, source)
        elif outcome == "fork":
            assert ours is not None
            mine = SignedTreeHead.create(self.key, head.size, ours, self._wall_ms(),
                                         self.log_id)
            await self._alarm(ForkAlarm(
                AlarmKind.SAME_SIZE_DIFFERENT_ROOT, mine, head,
                f"{source} gossiped root {head.root.hex()[:16]}… for size {head.size}; "
                f"our log has {ours.hex()[:16]}…", source))
        elif not self._head_bytes or head.size >= SignedTreeHead.decode(self._head_bytes).size:
            self._head_bytes = head.encode()

    async def _store_future_heads(self, size: int) -> None:
        for head_size in sorted(s for s in self._future_heads if s <= size):
            head, source = self._future_heads.pop(head_size)
            await self._store_head(head, source)

    async def _check_pending_proofs(self, size: int) -> None:
        """Answer the monitor's consistency questions from our own copy of the log."""
        checked = 0
        for request in self.monitor.pending():
            if request.new.size > size or checked >= MAX_PROOF_CHECKS:
                continue
            checked += 1
            proof = await trio.to_thread.run_sync(self.ledger.consistency_proof,
                                                  request.old.size, request.new.size)
            for alarm in self.monitor.check(request, proof):
                await self._alarm(alarm)

    async def _alarm(self, alarm: ForkAlarm) -> None:
        pair = (alarm.first.head_hash, alarm.second.head_hash)
        if pair in self._alarm_pairs:
            return
        self._alarm_pairs.add(pair)
        self.alarms_raised += 1
        self.m_alarms.inc()
        self.log.error("ledger.fork_alarm", kind=alarm.kind.value, source=alarm.source,
                       detail=alarm.detail, equivocation=alarm.equivocation)
        await trio.to_thread.run_sync(self.ledger.record_alarm, alarm)

    def _gossip(self) -> LedgerGossip:
        return LedgerGossip(head=self._head_bytes, voters=tuple(sorted(self.voters)))

    def _targets(self) -> frozenset[str]:
        """Who hears from us: the members, the configured voters, and the connected
        peers of our region (a would-be learner must reach the leader)."""
        node = self.node
        assert node is not None
        connected = {r.peer_id for r in self.daemon.table.connected()
                     if r.region == self.region}
        return (node.conf.members | self.voters | connected) - {self.peer_id}

    async def _gossip_loop(self) -> None:
        while True:
            for peer in self._targets():
                self._link(peer)
            await trio.sleep(GOSSIP_INTERVAL_S)

    def _link(self, peer: str) -> _Link:
        link = self._links.get(peer)
        if link is None:
            link = self._links[peer] = _Link()
            assert self._nursery is not None
            self._nursery.start_soon(self._writer, peer, link)
        return link

    def _send(self, msg: RaftMessage) -> None:
        link = self._link(msg.to)
        data = msg.encode()
        if len(link.queue) >= PEER_QUEUE_MESSAGES \
                or link.queued_bytes + len(data) > PEER_QUEUE_BYTES:
            self.m_dropped.labels(reason="queue_full").inc()
            return
        link.queue.append(data)
        link.queued_bytes += len(data)
        link.wake.set()

    def _connected(self, peer: str) -> bool:
        rec = self.daemon.table.get(peer)
        return rec is not None and rec.connected

    async def _open(self, peer: str) -> FramedStream:
        try:
            with trio.fail_after(OPEN_TIMEOUT_S):
                stream = await self.daemon.host.new_stream(to_id(peer), [RAFT_PROTOCOL_ID])
        except trio.TooSlowError:
            raise StreamGone(f"could not open {RAFT_PROTOCOL_ID} to {peer} in time") from None
        except Exception as exc:  # libp2p raises many kinds for "no connection"
            raise StreamGone(f"could not open {RAFT_PROTOCOL_ID} to {peer}: {exc!r}") \
                from None
        metric = self.daemon.metrics.bytes

        def count(direction: str, n: int) -> None:
            metric.labels(protocol=RAFT_PROTOCOL_ID, direction=direction).inc(n)

        return FramedStream(stream, count_bytes=count)

    async def _writer(self, peer: str, link: _Link) -> None:
        """Carry our messages to `peer` on one long-lived stream; gossip when idle."""
        last_gossip = -GOSSIP_INTERVAL_S
        while True:
            with trio.move_on_after(GOSSIP_INTERVAL_S):
                await link.wake.wait()
            link.wake = trio.Event()
            now = trio.current_time()
            connected = self._connected(peer)
            if not connected or now < link.retry_at:
                if link.queue:
                    self.m_dropped.labels(reason="no_stream").inc(len(link.queue))
                link.queue.clear()
                link.queued_bytes = 0
                await self._close_link(link)
                if not connected:  # when it reconnects, open at once
                    link.retry_at, link.backoff = 0.0, REOPEN_BACKOFF_S
                continue
            if link.fs is None:
                try:
                    link.fs = await self._open(peer)
                except StreamGone as exc:
                    link.retry_at = trio.current_time() + link.backoff
                    link.backoff = min(link.backoff * 2, REOPEN_BACKOFF_MAX_S)
                    self.log.debug("raft.open_failed", peer=peer, error=str(exc)[:200])
                    continue
                link.backoff = REOPEN_BACKOFF_S
                last_gossip = -GOSSIP_INTERVAL_S
            frames: list[Message] = []
            nbytes = 0
            while link.queue and nbytes < WRITE_BATCH_BYTES:
                data = link.queue.popleft()
                link.queued_bytes -= len(data)
                nbytes += len(data)
                frames.append(RaftFrame(data))
            if now - last_gossip >= GOSSIP_INTERVAL_S:
                frames.append(self._gossip())
                last_gossip = now
            if link.queue:
                link.wake.set()
            if not frames:
                continue
            try:
                with trio.fail_after(WRITE_TIMEOUT_S):
                    await link.fs.send(*frames)
            except (StreamGone, trio.TooSlowError, LocalProtocolError) as exc:
                self.log.debug("raft.write_failed", peer=peer, error=repr(exc)[:200])
                self.m_dropped.labels(reason="write_failed").inc(len(frames))
                await self._close_link(link)
                link.retry_at = trio.current_time() + link.backoff

    @staticmethod
    async def _close_link(link: _Link) -> None:
        if link.fs is not None:
            fs, link.fs = link.fs, None
            with contextlib.suppress(Exception), trio.move_on_after(1.0):
                await fs.reset()


class ServiceRoute:
    """The recorder's route inside the daemon, for code running in a worker thread
    (motors, approvals): statements are first made durable in the outbox, then handed
    to the service on the trio thread. If the region cannot commit them in time they
    stay queued (`Queued`): the service proposes them until they commit, across restarts.
    """

    def __init__(self, service: LedgerService, token: trio.lowlevel.TrioToken,
                 timeout_s: float = APPEND_TIMEOUT_S) -> None:
        self.service = service
        self.token = token
        self.timeout_s = timeout_s
        self.outbox = OutboxRoute(service.env)

    def submit(self, statements: Sequence[LedgerEntry]) -> list[Receipt]:
        if self.service.solo:
            return [*self.service.ledger_append_direct(statements)]
        queued = self.outbox.submit(statements)
        try:
            applied = trio.from_thread.run(self.service.submit, list(statements),
                                           self.timeout_s, trio_token=self.token)
            return [*applied]
        except LedgerServiceError:
            return list(queued)
        except RuntimeError:
            # Called on the trio thread itself (it cannot wait for the loop it blocks):
            # the outbox holds the statements and the loop proposes them.
            trio.lowlevel.current_trio_token().run_sync_soon(self.service.enqueue_many,
                                                             list(statements))
            return list(queued)


def statements_bytes(statements: Sequence[LedgerEntry]) -> list[bytes]:
    """The control socket's form of statements (`ledger_submit`)."""
    return [s.encoded for s in statements]


__all__ = [
    "APPEND_TIMEOUT_S",
    "MAX_ENTRY_BYTES",
    "OUTBOX_DB",
    "RAFT_PROTOCOL_ID",
    "LedgerChunk",
    "LedgerFetch",
    "LedgerGossip",
    "LedgerService",
    "LedgerServiceError",
    "RaftFrame",
    "ServiceRoute",
    "SnapshotState",
    "decode_batch",
    "encode_batch",
    "receipt_from_plain",
    "receipt_to_plain",
    "region_log_id",
    "slot_key",
]
