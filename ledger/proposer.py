"""The ledger proposer, sans-I/O: statements queue → Raft batches → proposals, retries and
the callers waiting for receipts.

The ledger service (`gd.node.services.ledger_service`) used to do this inline with trio
events and the Raft node at hand. Here it is a plain state machine the service drives, so
the batching, back-pressure, retry and waiter rules are tested without a daemon, a clock
or a disk (tests/ledger/test_proposer.py). It reads no clock: every call that needs the
time takes `now` (seconds, any monotonic origin) from the caller.

The conversation, one event at a time:

* `submit(statements)` queues signed statements and returns a *ticket* per statement;
  `enqueue(statement)` queues one nobody waits for (the outbox, migrated statements).
  A statement is queued once per (author, idempotency key), however often it arrives.
* `next_batch(now)` cuts the next batch from the queue (bounded in statements and bytes,
  at most `max_inflight` batches unapplied); the caller proposes it to Raft, then reports
  `proposed(batch)` or `dropped(batch)` (Raft refused it: the statements go back to the
  front of the queue and proposing stops until the next wake-up).
* `stale(now)` names the batches proposed `retry_after_s` ago and not yet committed; the
  caller looks each one up in Raft and reports `looked_up(request_id, state, now)`, which
  answers whether to propose the same bytes again and under which request id (a new one
  only when the Raft sessions forgot the old id: the ledger still deduplicates).
* `committed(request_ids)` forgets batches Raft committed (of ours); `applied(receipts)`
  resolves the tickets waiting for those statements and returns them with their receipt.
* `release(tickets)` forgets tickets whose caller stopped waiting (done or timed out).

Why request ids only advance on a proposal Raft took: the ids are (client_id, n) in the
Raft sessions' window; skipping ids for refused proposals would only waste that window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from gd.genome import canonical
from gd.genome.errors import DecodeError
from gd.ledger.chain import AppendReceipt
from gd.ledger.entry import MAX_ENTRY_BYTES, LedgerEntry
from gd.ledger.errors import LocalLedgerError, RemoteLedgerError
from gd.ledger.raft_sessions import RequestState

# A Raft entry holds one batch: at most this many statements and bytes. A statement is
# ~400-600 bytes; 512 KiB keeps an entry (and an AppendEntries frame) far inside the
# core's 1 MiB entry limit and the wire's 4 MiB frame.
MAX_PROPOSAL_STATEMENTS = 2000
MAX_PROPOSAL_BYTES = 512 * 1024
# Per-statement framing overhead counted towards MAX_PROPOSAL_BYTES (msgpack bin header).
STATEMENT_OVERHEAD_BYTES = 8
# Batches proposed and not yet applied, per node. Pipelining is what gives throughput;
# the bound keeps a node from flooding the leader (and the sessions' 1024-request window
# far from forgetting a request still in flight).
MAX_INFLIGHT_BATCHES = 64
# Statements queued before submissions are refused (backpressure on callers).
MAX_QUEUED_STATEMENTS = 200_000
# A batch not applied this long after proposing is looked up, and re-proposed with the
# same ids if the log does not know it: two election timeouts (2 x 1-2 s).
RETRY_AFTER_S = 3.0

Slot = tuple[str, str]  # (author, idempotency key): a statement's identity on the ledger


def slot_of(statement: LedgerEntry) -> Slot:
    """The (author, idempotency key) under which the ledger deduplicates a statement."""
    return statement.author, statement.idempotency_key


def encode_batch(statements: Sequence[LedgerEntry]) -> bytes:
    """A Raft entry's data: the statements' canonical encodings, in order."""
    return canonical.encode_plain([s.encoded for s in statements])


# Finds the statement decoded (and checked) here before from these exact bytes, if any.
KnownStatement = Callable[[bytes], LedgerEntry | None]


def decode_batch(data: bytes, known: KnownStatement | None = None) -> list[LedgerEntry]:
    """The statements of a committed entry. Every node decodes the same bytes, so what is
    dropped here (malformed, sequenced, unsigned) is dropped identically everywhere.

    `known` hands back a statement this node already holds decoded from the very same
    bytes (one it checked at submit), so its apply skips decoding it again (~27 us per
    statement, issue 15). It is taken only where strict decoding would give the same
    statement: within MAX_ENTRY_BYTES and unsequenced, so every node drops the same ones.
    """
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
        entry = known(raw) if known is not None and len(raw) <= MAX_ENTRY_BYTES else None
        if entry is None:
            try:
                entry = LedgerEntry.decode(raw)
            except RemoteLedgerError:
                continue
        if not entry.is_sequenced:
            out.append(entry)
    return out


class ProposerFull(LocalLedgerError):
    """The queue holds `max_queued` statements already: the caller retries later."""


@dataclass
class Batch:
    """Statements proposed (or about to be) as one Raft entry under `request_id`."""

    request_id: int
    statements: list[LedgerEntry]
    data: bytes
    proposed_at: float


@dataclass(frozen=True)
class Repropose:
    """Propose `data` again under `request_id` (the batch's old id, or a fresh one)."""

    request_id: int
    data: bytes
    statements: int
    renamed_from: int | None = None


@dataclass
class _Ticket:
    statement: LedgerEntry
    receipt: AppendReceipt | None = None


@dataclass
class ProposerLimits:
    """The bounds above, as one value the service (and tests) may shrink."""

    max_statements: int = MAX_PROPOSAL_STATEMENTS
    max_bytes: int = MAX_PROPOSAL_BYTES
    max_inflight: int = MAX_INFLIGHT_BATCHES
    max_queued: int = MAX_QUEUED_STATEMENTS
    retry_after_s: float = RETRY_AFTER_S

    def __post_init__(self) -> None:
        if min(self.max_statements, self.max_bytes, self.max_inflight, self.max_queued) < 1 \
                or self.retry_after_s <= 0:
            raise LocalLedgerError("proposer limits must be positive")


@dataclass
class LedgerProposer:
    """Queue, batches in flight and waiting tickets of one node's proposals."""

    client_id: str
    limits: ProposerLimits = field(default_factory=ProposerLimits)
    next_request: int = 1
    _queue: deque[LedgerEntry] = field(default_factory=deque)
    _queued: set[Slot] = field(default_factory=set)
    _inflight: dict[int, Batch] = field(default_factory=dict)
    _tickets: dict[int, _Ticket] = field(default_factory=dict)
    _by_slot: dict[Slot, list[int]] = field(default_factory=dict)
    _next_ticket: int = 1

    # -- queries -------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Statements waiting to be proposed."""
        return len(self._queue)

    @property
    def inflight(self) -> int:
        """Batches proposed and not yet committed."""
        return len(self._inflight)

    def is_queued(self, slot: Slot) -> bool:
        """Queued or in flight, and not yet applied here."""
        return slot in self._queued

    def waiting_statement(self, slot: Slot) -> LedgerEntry | None:
        """The signed statement already on its way under `slot`, if any: a retry joins it
        instead of signing a second copy (another clock stamp, another hash)."""
        tickets = self._by_slot.get(slot)
        if tickets:
            return self._tickets[tickets[0]].statement
        for statement in self._queue:
            if slot_of(statement) == slot:
                return statement
        for batch in self._inflight.values():
            for statement in batch.statements:
                if slot_of(statement) == slot:
                    return statement
        return None

    def inflight_request(self, slot: Slot) -> int | None:
        """The request id of the batch in flight that carries `slot`."""
        for request_id, batch in self._inflight.items():
            if any(slot_of(s) == slot for s in batch.statements):
                return request_id
        return None

    def receipt(self, ticket: int) -> AppendReceipt | None:
        """The receipt a ticket was resolved with (None: still waiting)."""
        held = self._tickets.get(ticket)
        return held.receipt if held else None

    # -- events in -----------------------------------------------------------------------

    def enqueue(self, statement: LedgerEntry) -> bool:
        """Queue one statement unless its slot is queued already; True if queued now."""
        slot = slot_of(statement)
        if slot in self._queued:
            return False
        self._queued.add(slot)
        self._queue.append(statement)
        return True

    def submit(self, statements: Sequence[LedgerEntry]) -> list[int]:
        """Queue statements for callers who wait: one ticket per statement, in order.
        ProposerFull (nothing queued) when the queue would pass `max_queued`."""
        if len(self._queue) + len(statements) > self.limits.max_queued:
            raise ProposerFull(f"{len(self._queue)} statements already queued; retry later")
        tickets = []
        for statement in statements:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._tickets[ticket] = _Ticket(statement)
            self._by_slot.setdefault(slot_of(statement), []).append(ticket)
            tickets.append(ticket)
            self.enqueue(statement)
        return tickets

    def release(self, tickets: Iterable[int]) -> None:
        """The callers of these tickets stopped waiting: forget them."""
        for ticket in tickets:
            held = self._tickets.pop(ticket, None)
            if held is None:
                continue
            slot = slot_of(held.statement)
            left = [t for t in self._by_slot.get(slot, []) if t != ticket]
            if left:
                self._by_slot[slot] = left
            else:
                self._by_slot.pop(slot, None)

    def next_batch(self, now: float) -> Batch | None:
        """Cut the next batch to propose, or None (queue empty, or the pipeline full).
        Report `proposed` or `dropped` before asking again."""
        if not self._queue or len(self._inflight) >= self.limits.max_inflight:
            return None
        take: list[LedgerEntry] = []
        nbytes = 0
        while self._queue and len(take) < self.limits.max_statements:
            size = len(self._queue[0].encoded) + STATEMENT_OVERHEAD_BYTES
            if take and nbytes + size > self.limits.max_bytes:
                break
            take.append(self._queue.popleft())
            nbytes += size
        return Batch(self.next_request, take, encode_batch(take), now)

    def proposed(self, batch: Batch) -> None:
        """Raft took the batch: it is in flight under its request id."""
        self.next_request = max(self.next_request, batch.request_id + 1)
        self._inflight[batch.request_id] = batch

    def dropped(self, batch: Batch) -> None:
        """Raft refused the batch (no leader, back-pressure): back to the queue's front."""
        self._queue.extendleft(reversed(batch.statements))

    def stale(self, now: float) -> list[int]:
        """Request ids of batches proposed `retry_after_s` ago or more; each must be
        answered with `looked_up` (which restarts its timer)."""
        return [rid for rid, batch in self._inflight.items()
                if now - batch.proposed_at >= self.limits.retry_after_s]

    def looked_up(self, request_id: int, state: RequestState, now: float
                  ) -> Repropose | None:
        """What Raft says of a stale batch; returns what to propose again, if anything.
        Committed: forgotten. Pending: wait another round. Unknown: the same ids again.
        Expired (the sessions forgot it): a fresh request id, the same bytes."""
        batch = self._inflight.get(request_id)
        if batch is None:
            return None
        batch.proposed_at = now
        if state is RequestState.COMMITTED:
            del self._inflight[request_id]
            return None
        if state is RequestState.PENDING:
            return None
        if state is RequestState.EXPIRED:
            fresh = self.next_request
            self.next_request += 1
            return Repropose(fresh, batch.data, len(batch.statements), request_id)
        return Repropose(request_id, batch.data, len(batch.statements))

    def reproposed(self, action: Repropose) -> None:
        """Raft took a re-proposal: a renamed batch is in flight under its new id."""
        if action.renamed_from is not None and action.renamed_from in self._inflight:
            batch = self._inflight.pop(action.renamed_from)
            batch.request_id = action.request_id
            self._inflight[action.request_id] = batch

    def committed(self, request_ids: Iterable[int]) -> None:
        """Raft committed entries of ours with these request ids."""
        for request_id in request_ids:
            self._inflight.pop(request_id, None)

    def applied(self, receipts: Iterable[AppendReceipt]) -> list[tuple[int, AppendReceipt]]:
        """Statements reached the ledger: their slots leave the queue, and the tickets
        waiting for them (not yet resolved) are returned with their receipt."""
        resolved = []
        for receipt in receipts:
            slot = (receipt.author, receipt.idempotency_key)
            self._queued.discard(slot)
            for ticket in self._by_slot.get(slot, []):
                held = self._tickets[ticket]
                if held.receipt is None:
                    held.receipt = receipt
                    resolved.append((ticket, receipt))
        return resolved

    def pending(self) -> list[LedgerEntry]:
        """The statements whose slots are queued or in flight (not yet applied here)."""
        inflight = (s for batch in self._inflight.values() for s in batch.statements)
        out: dict[Slot, LedgerEntry] = {}
        for statement in (*self._queue, *inflight):
            if slot_of(statement) in self._queued:
                out.setdefault(slot_of(statement), statement)
        return list(out.values())

    def settled(self, receipts: Sequence[AppendReceipt]) -> list[tuple[int, AppendReceipt]]:
        """Slots the ledger came to hold without an apply of ours (a snapshot restore
        brought their entries): like `applied`, and the queue forgets their statements,
        so none waits for an apply that will never come (nor is proposed again)."""
        slots = {(r.author, r.idempotency_key) for r in receipts}
        self._queue = deque(s for s in self._queue if slot_of(s) not in slots)
        return self.applied(receipts)

    def drain(self) -> list[LedgerEntry]:
        """Take every queued statement (a region of one appends them itself)."""
        statements = list(self._queue)
        self._queue.clear()
        self._queued.clear()
        return statements

    def __iter__(self) -> Iterator[Batch]:
        """The batches in flight, oldest first (for status and tests)."""
        return iter(list(self._inflight.values()))


__all__ = [
    "MAX_INFLIGHT_BATCHES",
    "MAX_PROPOSAL_BYTES",
    "MAX_PROPOSAL_STATEMENTS",
    "MAX_QUEUED_STATEMENTS",
    "RETRY_AFTER_S",
    "Batch",
    "KnownStatement",
    "LedgerProposer",
    "ProposerFull",
    "ProposerLimits",
    "Repropose",
    "decode_batch",
    "encode_batch",
    "slot_of",
]
