"""The region's ledger, ordered by Raft over libp2p (`/gd/raft/1.0.0`).

Two sans-I/O cores decide everything: `gd.ledger.raft` the order, `gd.ledger.proposer`
the queue, batches, retries and who waits for what. This module feeds them and carries
their bytes, the way `node/services/sync_service.py` carries sync's. Its rooms:

* **members** — the voters are `cfg.ledger_voters` (peer ids). Every founding voter
  bootstraps the same configuration. Every other node of the region whose config names
  the same voters is a *learner*: it announces itself in its gossip, and the leader adds
  it with `ConfChange ADD_LEARNER` when it hears it. With no voters configured the node
  is a *region of one*: no Raft, statements go straight to the local ledger
  (`ledger_solo.SoloAppender`), concurrent callers sharing a group commit.
* **the loop** (here) — one task owns the `RaftNode`: it ticks every `TICK_S`, steps
  inbound messages, proposes queued statements in batches, and handles each `Ready` in
  the order docs/raft.md requires: persist (`LmdbRaftStorage`, fsync'd, in a worker
  thread), send, restore a snapshot, hand the committed entries to the applier, advance.
* **applying** — `ledger_apply.Applier`: committed batches to the `Ledger` in group
  commits, in its own task. A Raft entry's data is a batch of signed, unsequenced
  statements; `Ledger.append_batch` sequences them identically on every node, so the
  applied order *is* the ledger order. The leader signs a tree head after each group.
* **links** — `ledger_links.PeerLinks` (core `gd.ledger.link_core`): one long-lived
  outbound stream per peer; inbound streams are `ledger_inbound.RaftInbound`'s (core
  `gd.ledger.inbound_core`: each message's `frm` must be the stream's peer). A peer
  whose frames stop arriving is handed to the gate's liveness probe.
* **gossip** — `ledger_gossip.HeadWatch` (core `gd.ledger.gossip_core`): signed heads
  cross-checked, fork alarms.
* **snapshots** — `ledger_catchup.Catchup` (core `gd.ledger.catchup_core`): compaction,
  and fetching what a snapshot points at from a member.
* **callers** — `ledger_control`: the control methods and the in-daemon `ServiceRoute`.

Failure model and the reasons behind each limit: docs/ledger.md, "The region's ledger".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import lmdb
import trio
from prometheus_client import Counter, Gauge

from gd.crdt.hlc import HLC
from gd.ledger.chain import AppendReceipt, AppendStatus
from gd.ledger.entry import EntryKind, LedgerEntry
from gd.ledger.errors import LocalLedgerError, RemoteLedgerError
from gd.ledger.proposer import LedgerProposer, ProposerFull
from gd.ledger.raft import RaftConfig, RaftNode, Ready
from gd.ledger.raft_messages import AppendEntries, Heartbeat
from gd.ledger.raft_records import ProposalDropped, RaftRole
from gd.ledger.sth import DEFAULT_LOG_ID
from gd.node.services.ledger_apply import Applier, ApplyResult
from gd.node.services.ledger_catchup import COMPACT_EVERY, Catchup
from gd.node.services.ledger_control import (
    APPEND_TIMEOUT_S,
    LedgerServiceError,
    ServiceRoute,
    register_control,
)
from gd.node.services.ledger_gossip import HeadWatch
from gd.node.services.ledger_group import (
    CheckedStatements,
    Waiters,
    check_signatures,
)
from gd.node.services.ledger_inbound import RaftInbound
from gd.node.services.ledger_links import PeerLinks
from gd.node.services.ledger_solo import SoloAppender
from gd.node.services.ledger_wire import RAFT_PROTOCOL_ID, region_log_id
from gd.node.services.recorder import existing_receipt, same_event_is_duplicate
from gd.node.store.ledger_outbox import RegionBook
from gd.node.store.ledger_store import Ledger
from gd.node.store.raft_lmdb import LmdbRaftStorage

if TYPE_CHECKING:
    from gd.node.net.gate import Gate

# The core's clock: 100 ms ticks with 10-tick elections (gd.ledger.raft) give a 1-2 s
# failover, inside the 2 s target.
TICK_S: Final = 0.1
# Digests of statements checked at submit, kept so their apply need not check again.
MAX_VERIFIED_REMEMBERED: Final = 100_000
# Submissions of at most this many statements are checked on the event loop (16 Ed25519
# checks hold it under 1 ms; pynacl releases the GIL meanwhile): 3 voters as processes,
# 64 clients, 10 statements a call, +11 to +37 % entries/s; 1 a call, +47 to +59 %.
INLINE_CHECK_MAX: Final = 16


class LedgerService:
    """The ledger of one daemon: region member over Raft, or a region of one.

    Construction registers the control methods (and, for a member, the protocol);
    `run()` drives everything until cancelled with the daemon.
    """

    def __init__(self, gate: Gate, cortex: Any, *, seed: int | None = None,
                 compact_every: int = COMPACT_EVERY,
                 wall_ms: Callable[[], int] | None = None) -> None:
        self.table = gate.table
        self.key = gate.key
        self.peer_id = gate.key.peer_id
        self.env: lmdb.Environment = cortex.env
        self.log = gate.log.bind(component="ledger")
        self.region = gate.cfg.region
        self.voters: frozenset[str] = frozenset(gate.cfg.ledger_voters)
        self.solo = not self.voters
        self.log_id = DEFAULT_LOG_ID if self.solo else region_log_id(self.region)
        self.clock = gate.clock
        self._wall_ms = wall_ms or (lambda: int(self.clock.wall() * 1000))
        self._clock = HLC(0, 0)
        self.ledger = Ledger(self.env)
        self.book = RegionBook(self.env)
        # (client_id, request_id): the client id carries a per-start nonce, so a restarted
        # node never reuses a request id the sessions remember as committed. The nonce comes
        # from the gate's injected source (os.urandom in the daemon, seeded in a simulation).
        self.proposer = LedgerProposer(f"{self.peer_id}/{gate.rng_nonce(8).hex()}")
        self.client_id = self.proposer.client_id
        self._waiting = Waiters()  # proposer tickets -> their callers
        self.alone = SoloAppender(self.ledger, self.book, self.key, self._wall_ms)
        self.solo_group = self.alone.group
        self._verified = CheckedStatements(MAX_VERIFIED_REMEMBERED)
        self._saved_vote: tuple[int, str | None] = (0, None)
        self._wake = trio.Event()
        self.node: RaftNode | None = None
        self.storage: LmdbRaftStorage | None = None
        self.started = trio.Event()
        registry = gate.metrics.registry
        self.m_height = gate.metrics.ledger_height
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
        self.heads = HeadWatch(self.ledger, self.key, log_id=self.log_id, voters=self.voters,
                               wall_ms=self._wall_ms, alarms=self.m_alarms, log=self.log)
        self.links = PeerLinks(gate, byte_counter=gate.metrics.bytes,
                               dropped=self.m_dropped, gossip=self.heads.gossip,
                               clock=self.clock, log=self.log,
                               suspect=gate.liveness.suspect,
                               newer_connection=gate.conn_order.newer)
        self.applier = Applier(self.ledger, self.book, self.key, log_id=self.log_id,
                               wall_ms=self._wall_ms, verified=self._verified,
                               on_applied=self._applied, log=self.log)
        if not self.solo:
            self.storage = LmdbRaftStorage(self.env)
            self._migrate_local_ledger()
            state = self.storage.load()
            if state.is_empty and self.peer_id in self.voters:
                self.storage.bootstrap(self.voters)
                state = self.storage.load()
            self.node = RaftNode(self.peer_id, state, RaftConfig(
                seed=seed if seed is not None else int.from_bytes(gate.rng_nonce(8), "big")))
            self.inbound = RaftInbound(self.node, region=self.region, voters=self.voters,
                                       ledger=self.ledger, heads=self.heads,
                                       dropped=self.m_dropped, wake=self.wake,
                                       heard=self.links.heard,
                                       arrived=self.links.arrived, clock=self.clock,
                                       log=self.log)
            self.catchup = Catchup(self.ledger, self.storage, self.applier,
                                   peer_id=self.peer_id, voters=self.voters,
                                   log_id=self.log_id, open_stream=self.links.open,
                                   compact_every=compact_every, log=self.log)
            self._saved_vote = (state.hard_state.term, state.hard_state.vote)
            gate.register_protocol(RAFT_PROTOCOL_ID, self.inbound.serve)
        self._load_outbox()
        register_control(gate.methods, self)

    # -- startup -----------------------------------------------------------------------

    @property
    def applied_index(self) -> int:
        """The Raft index the ledger holds (also on disk, with the entries)."""
        return self.applier.applied_index

    def _migrate_local_ledger(self) -> None:
        """A node that kept a ledger alone and now joins a region: its local statements
        are proposed to the region (moved to the outbox) and the local tables emptied
        in the same transaction, so the region's order is the only one on this node."""
        assert self.storage is not None
        if not self.storage.load().is_empty or self.ledger.size == 0:
            return
        moved = self.book.migrate(self.ledger)
        if moved is not None:
            self.log.warning("ledger.migrated_to_region", statements=moved,
                             region=self.region,
                             note="the local ledger's statements are proposed to the region")

    def _load_outbox(self) -> None:
        raws = self.book.queued()
        for raw in raws:
            try:
                statement = LedgerEntry.decode(raw)
            except RemoteLedgerError as exc:
                self.log.error("ledger.outbox_corrupt", error=str(exc))
                continue
            self.proposer.enqueue(statement)
        if raws:
            self.log.info("ledger.outbox_loaded", statements=len(raws))

    # -- public API (trio thread) --------------------------------------------------------

    def stamp(self) -> int:
        self._clock = self._clock.now(self._wall_ms())
        return self._clock.packed

    def route(self) -> ServiceRoute:
        """A recorder route for code in this daemon's worker threads (the daemon hands
        it to the services that record events)."""
        return ServiceRoute(self, trio.lowlevel.current_trio_token())

    def head(self) -> tuple[int, bytes]:
        """(size, root) of the local copy, for the handshake."""
        size = self.ledger.size
        return size, self.ledger.root(size)

    @property
    def alarms_raised(self) -> int:
        return self.heads.alarms_raised

    async def append(self, kind: EntryKind | str, payload_hash: bytes,
                     summary: dict[str, Any] | None = None, idempotency_key: str | None = None,
                     timeout_s: float = APPEND_TIMEOUT_S) -> AppendReceipt:
        """Sign one statement as this node and wait until the region commits it.

        A retry with the same key while the first is in flight joins it; after it
        committed, the retry gets its receipt (DUPLICATE, as the recorder does)."""
        key_text = idempotency_key or payload_hash.hex()
        queued = self.proposer.waiting_statement((self.peer_id, key_text))
        if queued is not None:
            return (await self.submit([queued], timeout_s))[0]
        existing = await trio.to_thread.run_sync(existing_receipt, self.ledger, self.peer_id,
                                                 key_text, kind, payload_hash)
        if existing is not None:
            return existing
        statement = LedgerEntry.create(self.key, kind, self.stamp(), payload_hash, summary,
                                       key_text)
        return (await self.submit([statement], timeout_s))[0]

    async def submit(self, statements: Sequence[LedgerEntry],
                     timeout_s: float = APPEND_TIMEOUT_S) -> list[AppendReceipt]:
        """Order signed statements on the region's ledger; return once each is applied
        here (a receipt each). LedgerServiceError on timeout: retry with the same
        statements (they are deduplicated), or ask `lookup`."""
        for statement in statements:
            if statement.is_sequenced:
                raise LocalLedgerError("submit unsequenced statements")
        # A few statements are checked right here: the hop to a worker thread cost
        # more than the check (ADR 0055). Many go across cores in worker threads, the
        # event loop serving the network and other callers meanwhile (one hand-off per
        # submission: grouping them was measured slower, ADR 0049).
        if self.solo and self.alone.group.running:
            # A region of one checks them a group at a time, off the loop (ADR 0059).
            return await self.alone.append(statements)
        if len(statements) <= INLINE_CHECK_MAX:
            bad = check_signatures(statements)
        else:
            bad = await trio.to_thread.run_sync(check_signatures, statements)
        if bad:
            statements[bad[0]].verify_signature()  # raises with the reason
        if self.solo:  # appended directly: nothing would ever take them from `_verified`
            return await self.alone.append(statements)
        self._verified.remember(statements)
        try:
            tickets = self.proposer.submit(statements)
        except ProposerFull as exc:
            raise LedgerServiceError(str(exc)) from None
        waiter = self._waiting.add(tickets)
        self._wake.set()
        try:
            with trio.fail_after(timeout_s):
                if waiter.left:
                    await waiter.done.wait()
            receipts = [self.proposer.receipt(t) for t in tickets]
        except trio.TooSlowError:
            raise LedgerServiceError(
                f"not committed within {timeout_s} s (role {self._role()}, leader "
                f"{self._leader() or 'unknown'}); retry with the same statements or "
                "ask ledger_lookup") from None
        finally:
            self.proposer.release(tickets)
            self._waiting.forget(tickets)
        plain = [r for r in receipts if r is not None and r.status is not AppendStatus.CONFLICT]
        if len(plain) == len(receipts):
            return plain  # nothing to look up: no worker-thread hop for the common case
        return await trio.to_thread.run_sync(same_event_is_duplicate, self.ledger, statements,
                                             receipts)

    def enqueue_many(self, statements: Sequence[LedgerEntry]) -> None:
        """Queue statements for proposing without waiting (trio thread)."""
        for statement in statements:
            self.proposer.enqueue(statement)
        self._wake.set()

    def lookup(self, author: str, idempotency_key: str) -> dict[str, Any]:
        """Did the statement under (author, key) commit? From the ledger, then from the
        Raft sessions for a batch of ours still in flight."""
        entry = self.ledger.find(author, idempotency_key)
        if entry is not None:
            return {"state": "committed", "index": entry.index,
                    "entry_hash": entry.entry_hash.hex()}
        slot = (author, idempotency_key)
        request_id = self.proposer.inflight_request(slot)
        if request_id is not None:
            raft = self.node.lookup(self.client_id, request_id) if self.node else None
            return {"state": "pending", "request_id": request_id,
                    "raft": raft.state.value if raft else None,
                    "raft_index": raft.index if raft else 0}
        if self.proposer.is_queued(slot):
            return {"state": "queued"}
        return {"state": "unknown"}

    def status(self, head: tuple[int, bytes] | None = None) -> dict[str, Any]:
        """Mode, queue and (for a member) Raft role, term, leader and indices."""
        size, root = head if head is not None else self.head()
        out: dict[str, Any] = {
            "mode": "solo" if self.solo else "raft", "log_id": self.log_id, "size": size,
            "root": root.hex(), "queued": self.proposer.queued,
            "inflight": self.proposer.inflight, "alarms": self.alarms_raised,
            "voters_configured": sorted(self.voters),
        }
        node = self.node
        if node is not None:
            out.update(role=node.role.value, term=node.term, leader=node.leader,
                       commit=node.log.committed, applied=node.log.applied,
                       last_index=node.log.last_index(),
                       snapshot_index=node.log.snapshot_index,
                       voters=sorted(node.conf.voters), learners=sorted(node.conf.learners))
        return out

    def wake(self) -> None:
        """Run the loop now rather than at the next tick (after a direct proposal)."""
        self._wake.set()

    def _role(self) -> str:
        return self.node.role.value if self.node else "solo"

    def _leader(self) -> str | None:
        return self.node.leader if self.node else self.peer_id

    def leader_known(self) -> bool:
        """Does this node know the region's leader (a region of one always does)? Read
        from worker threads too: a stale answer only changes how long a caller waits."""
        return self._leader() is not None

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Drive the service until cancelled."""
        async with trio.open_nursery() as nursery:
            if self.solo:
                await nursery.start(self.solo_group.run)
                await self._run_solo()
                return
            await self._catch_up_on_start()
            nursery.start_soon(self.applier.run)
            # Each target's writer runs in its peer's lifetime, from the gate's events.
            self.links.follow(lambda: self.inbound.targets(self.table))
            self.started.set()
            await self._loop()

    async def _run_solo(self) -> None:
        """A region of one: flush whatever the outbox holds, then nothing to drive."""
        statements = self.proposer.drain()
        if statements:
            await self.alone.append(statements)
        self.started.set()
        await trio.sleep_forever()

    async def _catch_up_on_start(self) -> None:
        """A snapshot installed but not yet restored (a crash mid-restore): restore it
        before applying anything after it."""
        assert self.node is not None
        snap = self.node.snapshot
        if snap.index > self.applied_index and snap.data:
            await self.catchup.restore(snap, None)
            self._waiting.resolve(await self.catchup.settle(self.proposer))

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
            self.inbound.step_all()
            # Proposals' ages on the injected clock; the tick waits on trio's.
            self._propose_queued(self.clock.monotonic())
            self._retry_stale(self.clock.monotonic())
            while node.has_ready():
                await self._handle_ready(node.ready())
            await self.catchup.maybe_compact(node)
            self.m_term.set(node.term)
            self.m_leader.set(1 if node.is_leader else 0)
            self.m_commit.set(node.log.committed)

    def _propose_queued(self, now: float) -> None:
        node = self.node
        assert node is not None
        while (batch := self.proposer.next_batch(now)) is not None:
            try:
                node.propose(batch.data, self.client_id, batch.request_id)
            except ProposalDropped:
                self.proposer.dropped(batch)
                return
            self.proposer.proposed(batch)

    def _retry_stale(self, now: float) -> None:
        node = self.node
        assert node is not None
        for request_id in self.proposer.stale(now):
            state = node.lookup(self.client_id, request_id).state
            action = self.proposer.looked_up(request_id, state, now)
            if action is None:
                continue
            try:
                node.propose(action.data, self.client_id, action.request_id)
            except ProposalDropped:
                continue
            self.proposer.reproposed(action)
            self.log.info("raft.reproposed", request_id=action.request_id,
                          statements=action.statements)

    async def _handle_ready(self, rd: Ready) -> None:
        """Persist, send, restore, hand the committed entries to the applier, advance.

        A leader's appends go out *before* its own write (Raft thesis 10.2.1, as etcd
        does): the leader counts itself towards a commit only after `advance`, so an
        entry commits only once a quorum has it on disk. Votes and acknowledgements
        still wait for the write. Applying runs in its own task (the applier), so the
        next Ready is persisted while this one's statements are appended to the ledger."""
        node = self.node
        storage = self.storage
        assert node is not None and storage is not None
        early = self._can_send_early(rd)
        if early:
            for msg in rd.messages:
                self.links.send(msg)
        if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
            await trio.to_thread.run_sync(storage.save, rd.hard_state, rd.entries,
                                          rd.snapshot)
            if rd.hard_state is not None:
                self._saved_vote = (rd.hard_state.term, rd.hard_state.vote)
        if not early:
            for msg in rd.messages:
                self.links.send(msg)
        if rd.snapshot is not None:
            await self.applier.wait_applied(0)
            await self.catchup.restore(rd.snapshot, rd.leader)
            self._waiting.resolve(await self.catchup.settle(self.proposer))
        if rd.committed_entries:
            self.proposer.committed(e.request_id for e in rd.committed_entries
                                    if e.client_id == self.client_id)
            await self.applier.hand_over(rd.committed_entries, rd.duplicates,
                                         rd.role is RaftRole.LEADER)
        node.advance(rd)

    def _can_send_early(self, rd: Ready) -> bool:
        """Only a leader's appends and heartbeats, with term and vote already on disk."""
        if rd.role is not RaftRole.LEADER or rd.snapshot is not None or not rd.messages:
            return False
        if rd.hard_state is not None and \
                (rd.hard_state.term, rd.hard_state.vote) != self._saved_vote:
            return False
        return all(isinstance(m, AppendEntries | Heartbeat) for m in rd.messages)

    async def _applied(self, result: ApplyResult) -> None:
        """The applier appended a group: wake its callers, count, check heads."""
        self._waiting.resolve(self.proposer.applied(r for _, r in result.receipts))
        if result.receipts:
            self.m_committed.inc(len(result.receipts))
        self.m_height.set(result.size)
        await self.heads.signed(result.head, result.size)


__all__ = ["TICK_S", "LedgerService"]
