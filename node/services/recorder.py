"""Recording events on the ledger: what motors, approvals and agreements call.

`LedgerRecorder.append(kind, payload_hash, summary, idempotency_key)` signs a ledger
statement with the node key and hands it to a *route*, chosen once per recorder:

* **direct** — a region of one (no `[ledger] voters` in config.toml): the statement is
  appended to the local ledger durably (fsync'd before it returns) and a tree head is
  signed over the new size. This is what every node did before regions existed.
* **daemon** — a region member whose daemon runs: the statements go to the daemon's
  ledger service over the control socket (`ledger_submit`), which proposes them through
  Raft and answers once they are committed and applied. The CLI process cannot step Raft
  itself. A retry after a timeout sends the *same signed bytes*, so it can never become
  a second entry (the ledger deduplicates by author and idempotency key). When the
  region has no quorum (the daemon knows no ledger leader: a partition, voters down),
  the route does not wait: the statements stay in the daemon's queue, are also written
  to the outbox (so a daemon restart keeps them), and come back as `Queued` with the
  reason; the region commits them by itself once it has a leader again.
* **outbox** — a region member with no daemon running: the statement is queued in the
  LMDB sub-database ``ledger_outbox`` and the daemon proposes the queue when it starts.
  Appending to the local ledger directly would fork it from the region's.
* **service** — code running inside the daemon gets `route=ServiceRoute(...)`
  (`gd.node.services.ledger_control`), handed to it by whoever wires the services
  (`node/daemon.py`), and talks to the service in-process.

The summary is public (the ledger is shared across organisations): callers put ids,
hashes, verdicts and scores there, never gene content.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import lmdb

from gd.crdt.clock import Clock
from gd.crdt.hlc import HLC
from gd.genome.identity import NodeKey
from gd.ledger.chain import AppendReceipt, AppendStatus
from gd.ledger.entry import EntryKind, LedgerEntry
from gd.ledger.errors import LocalLedgerError
from gd.node.clock import SYSTEM_CLOCK
from gd.node.store.ledger_outbox import LEDGER_OUTBOX_DB, slot_key
from gd.node.store.ledger_store import MAX_BATCH, Ledger

# Statements per control call: ~500 bytes each, so a call stays well under a megabyte
# and the daemon proposes them as a few Raft batches.
SUBMIT_CHUNK = 1000
# How long the daemon may take to commit one chunk, and how often a timed-out chunk is
# re-sent (the same bytes: safe) before the command gives up and says so.
SUBMIT_TIMEOUT_S = 15.0
SUBMIT_ATTEMPTS = 3
# The first wait for a commit: a healthy region commits in milliseconds, so after this
# long the route asks the daemon whether the region has a leader at all before waiting
# longer (a command must not hang through a partition).
QUORUM_WAIT_S = 2.0
# `ledger_status` answers from memory in milliseconds.
STATUS_TIMEOUT_S = 5.0
NO_LEADER_REASON = "ledger leader unknown"


@dataclass(frozen=True)
class Queued:
    """A statement waiting in the outbox for the daemon to propose it."""

    author: str
    idempotency_key: str
    statement_hash: bytes
    status: str = "queued"
    # Why it waits: "" for a daemon that is not running (proposed when it starts), or
    # NO_LEADER_REASON while the region has no quorum.
    reason: str = ""

    @property
    def ok(self) -> bool:
        return True

    def to_json(self) -> dict[str, str]:
        return {"status": self.status, "author": self.author,
                "idempotency_key": self.idempotency_key,
                "statement_hash": self.statement_hash.hex(), "reason": self.reason}


Receipt = AppendReceipt | Queued


class Route(Protocol):
    """Where signed statements go; returns one receipt per statement, in order."""

    def submit(self, statements: Sequence[LedgerEntry]) -> Sequence[Receipt]: ...


class DirectRoute:
    """A region of one: append to the local ledger and sign a head."""

    def __init__(self, ledger: Ledger, key: NodeKey, wall_ms: Callable[[], int]) -> None:
        self.ledger, self.key, self.wall_ms = ledger, key, wall_ms

    def submit(self, statements: Sequence[LedgerEntry]) -> list[AppendReceipt]:
        receipts: list[AppendReceipt] = []
        for start in range(0, len(statements), MAX_BATCH):
            result = self.ledger.append_batch(statements[start:start + MAX_BATCH],
                                              head_key=self.key, timestamp=self.wall_ms())
            receipts.extend(result.receipts)
        return receipts


class OutboxRoute:
    """A region member with no daemon: queue for the daemon to propose at start."""

    def __init__(self, env: lmdb.Environment) -> None:
        self.env = env
        self.db = env.open_db(LEDGER_OUTBOX_DB)

    def submit(self, statements: Sequence[LedgerEntry]) -> list[Queued]:
        out = []
        with self.env.begin(write=True) as txn:
            for statement in statements:
                slot = slot_key(statement.author, statement.idempotency_key)
                raw = txn.get(slot, db=self.db)
                if raw is not None:
                    # A retry of a queued event keeps the first signed copy.
                    statement = LedgerEntry.decode(bytes(raw))
                else:
                    txn.put(slot, statement.encoded, db=self.db)
                out.append(Queued(statement.author, statement.idempotency_key,
                                  statement.statement_hash))
        return out

    def queued(self) -> list[LedgerEntry]:
        with self.env.begin() as txn:
            return [LedgerEntry.decode(bytes(v))
                    for v in txn.cursor(db=self.db).iternext(keys=False)]


class DaemonRoute:
    """A region member: the running daemon's ledger service orders the statements; with
    no daemon listening, the outbox keeps them; with no quorum, they are queued."""

    def __init__(self, home_root: Path, env: lmdb.Environment) -> None:
        self.home_root = home_root
        self.outbox = OutboxRoute(env)

    def submit(self, statements: Sequence[LedgerEntry]) -> list[Receipt]:
        from gd.node.control import DaemonNotRunning

        receipts: list[Receipt] = []
        for start in range(0, len(statements), SUBMIT_CHUNK):
            try:
                receipts.extend(self._submit_chunk(statements[start:start + SUBMIT_CHUNK]))
            except DaemonNotRunning:
                receipts.extend(self.outbox.submit(statements[start:]))
                return receipts
        return receipts

    def _leader_known(self) -> bool:
        """Does the daemon know a ledger leader (a region of one always does)? Raises
        DaemonNotRunning when the daemon is gone."""
        from gd.node.control import ControlError, DaemonNotRunning, call

        try:
            status = call(self.home_root, "ledger_status", timeout=STATUS_TIMEOUT_S)
        except DaemonNotRunning:
            raise
        except ControlError:
            return True  # cannot tell: keep waiting as for a slow commit
        if not isinstance(status, dict) or status.get("mode") != "raft":
            return True
        return bool(status.get("leader"))

    def _queue(self, chunk: Sequence[LedgerEntry], reason: str) -> list[Receipt]:
        """Keep the chunk in the outbox too (the daemon's queue is in memory) and answer
        `Queued`; the daemon deletes the outbox copies when the entries apply."""
        return [replace(q, reason=reason) for q in self.outbox.submit(chunk)]

    def _submit_chunk(self, chunk: Sequence[LedgerEntry]) -> list[Receipt]:
        from gd.node.control import ControlError, DaemonNotRunning, call

        # With no leader, hand the statements to the daemon's queue without waiting
        # (a zero wait still enqueues them) and say so.
        wait = QUORUM_WAIT_S if self._leader_known() else 0.0
        last_error = ""
        for _attempt in range(SUBMIT_ATTEMPTS):
            try:
                result = call(self.home_root, "ledger_submit", timeout=max(wait, 1.0) + 5.0,
                              statements=[s.encoded for s in chunk], timeout_s=wait)
            except DaemonNotRunning:
                raise
            except ControlError as exc:
                last_error = str(exc)
            else:
                return [receipt_from_plain(r) for r in result]
            if not self._leader_known():
                return self._queue(chunk, NO_LEADER_REASON)
            wait = SUBMIT_TIMEOUT_S
        self.outbox.submit(chunk)
        raise LocalLedgerError(
            f"the region's ledger did not commit {len(chunk)} statement(s) within "
            f"{QUORUM_WAIT_S + (SUBMIT_ATTEMPTS - 1) * SUBMIT_TIMEOUT_S:.0f} s although it "
            f"has a leader ({last_error}); they are kept in this node's outbox and proposed "
            "again when the daemon restarts")


def receipt_to_plain(receipt: AppendReceipt) -> dict[str, Any]:
    """A receipt as the control socket carries it (`ledger_submit`, `ledger_append`)."""
    return {"status": receipt.status.value, "index": receipt.index,
            "entry_hash": receipt.entry_hash.hex(), "author": receipt.author,
            "idempotency_key": receipt.idempotency_key}


def receipt_from_plain(data: dict[str, Any]) -> AppendReceipt:
    """The receipt `receipt_to_plain` made, back from the control socket's reply."""
    return AppendReceipt(AppendStatus(data["status"]), int(data["index"]),
                         bytes.fromhex(data["entry_hash"]), data["author"],
                         data["idempotency_key"])


def existing_receipt(ledger: Ledger, author: str, idempotency_key: str,
                     kind: EntryKind | str, payload_hash: bytes) -> AppendReceipt | None:
    """The receipt for an event already on the ledger under (author, key): DUPLICATE for
    the same kind and payload (a retry, though its clock stamp would differ), CONFLICT
    for another event under a used key; None when the key is free. The recorder and the
    ledger service both answer retries this way."""
    existing = ledger.find(author, idempotency_key)
    if existing is None:
        return None
    same = existing.kind == EntryKind(kind) and existing.payload_hash == payload_hash
    assert existing.index is not None
    return AppendReceipt(AppendStatus.DUPLICATE if same else AppendStatus.CONFLICT,
                         existing.index, existing.entry_hash, existing.author,
                         idempotency_key)


def same_event_is_duplicate(ledger: Ledger, statements: Sequence[LedgerEntry],
                            receipts: Sequence[AppendReceipt | None]) -> list[AppendReceipt]:
    """A retried event signed twice (two clock stamps) holds its key with the first
    copy: report DUPLICATE, not CONFLICT, when kind and payload are the same."""
    out = []
    for statement, receipt in zip(statements, receipts, strict=True):
        assert receipt is not None
        if receipt.status is AppendStatus.CONFLICT:
            existing = ledger.find(receipt.author, receipt.idempotency_key)
            if existing is not None and existing.kind == statement.kind \
                    and existing.payload_hash == statement.payload_hash:
                receipt = AppendReceipt(AppendStatus.DUPLICATE, receipt.index,
                                        receipt.entry_hash, receipt.author,
                                        receipt.idempotency_key)
        out.append(receipt)
    return out


def region_voters(env: lmdb.Environment) -> tuple[Path, tuple[str, ...]] | None:
    """(home, voters) when `env` is the Cortex of a gd-node home whose config names
    ledger voters; None otherwise (a bare environment, or a region of one)."""
    from gd.node.config import ConfigError, load_config

    home = Path(env.path()).parent
    config = home / "config.toml"
    if not config.exists():
        return None
    try:
        voters = load_config(config).ledger_voters
    except ConfigError:
        return None
    return (home, voters) if voters else None


def default_route(env: lmdb.Environment, ledger: Ledger, key: NodeKey,
                  wall_ms: Callable[[], int]) -> Route:
    """The route for a recorder opened on `env` (see the module docstring)."""
    member = region_voters(env)
    if member is None:
        return DirectRoute(ledger, key, wall_ms)
    return DaemonRoute(member[0], env)


class LedgerRecorder:
    """Signs statements and records them through the node's route; one per process."""

    def __init__(self, env: lmdb.Environment, key: NodeKey,
                 wall_ms: Callable[[], int] | None = None, *,
                 route: Route | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.ledger = Ledger(env)
        self.key = key
        self._wall_ms = wall_ms or (lambda: int(clock.wall() * 1000))
        self._clock = HLC(0, 0)
        self.route: Route = route or default_route(env, self.ledger, key, self._wall_ms)
        # Every receipt this recorder handed out, in order: a command reports them (a
        # `Queued` one means "recorded, not yet on the region's ledger").
        self.receipts: list[Receipt] = []

    def stamp(self) -> int:
        """The next hybrid-logical-clock stamp of this node (monotonic)."""
        self._clock = self._clock.now(self._wall_ms())
        return self._clock.packed

    def append(self, kind: EntryKind | str, payload_hash: bytes,
               summary: Mapping[str, Any] | None = None,
               idempotency_key: str | None = None) -> Receipt:
        """Record one event. A retry of the same event (same kind, payload and key) gets
        the original entry's receipt as DUPLICATE, even though its clock stamp would
        differ; another event under a key already used is a CONFLICT. On the outbox
        route the answer is `Queued`."""
        key_text = idempotency_key or payload_hash.hex()
        receipt: Receipt | None = existing_receipt(self.ledger, self.key.peer_id, key_text,
                                                   kind, payload_hash)
        if receipt is None:
            entry = LedgerEntry.create(self.key, kind, self.stamp(), payload_hash, summary,
                                       key_text)
            receipt = self.route.submit([entry])[0]
        self.receipts.append(receipt)
        return receipt

    def append_many(self, events: Sequence[tuple[EntryKind | str, bytes, Mapping[str, Any]]]
                    ) -> list[Receipt]:
        """Record many events (kind, payload hash, summary) as one batch — one fsync and
        one signed tree head for, say, a thousand decisions on the direct route, a few
        Raft entries on the daemon route. Keys default to the payload hash, so a retried
        batch is all DUPLICATE."""
        entries = [LedgerEntry.create(self.key, kind, self.stamp(), payload, summary)
                   for kind, payload, summary in events]
        receipts = list(self.route.submit(entries))
        self.receipts.extend(receipts)
        return receipts

    def head(self) -> tuple[int, bytes]:
        """(size, root) for the handshake's ledger head."""
        size = self.ledger.size
        return size, self.ledger.root(size)
