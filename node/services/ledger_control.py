"""How the rest of the node reaches the ledger service: the control socket's `ledger_*`
methods (CLI processes) and `ServiceRoute` (code in the daemon's worker threads).

Control calls get a clear `ValueError` for bad input or a ledger refusal (the control
server turns it into an error reply, never a traceback); the receipts travel as plain
dicts (`gd.node.services.recorder.receipt_to_plain`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import trio

from gd.ledger.entry import LedgerEntry
from gd.ledger.errors import LedgerError
from gd.node.services.recorder import (
    NO_LEADER_REASON,
    OutboxRoute,
    Receipt,
    receipt_to_plain,
)

if TYPE_CHECKING:
    from gd.node.services.ledger_service import LedgerService

# How long `ledger_append` / `ledger_submit` wait for the commit by default.
APPEND_TIMEOUT_S = 10.0
# `ledger_submit_many` bounds (ADR 0049): submissions, statements and statement bytes per
# call. A call over any of them is refused whole, before anything is submitted.
MAX_SUBMISSIONS_PER_CALL = 256
MAX_STATEMENTS_PER_CALL = 4096
MAX_SUBMIT_BYTES_PER_CALL = 8 * 1024 * 1024


class LedgerServiceError(RuntimeError):
    """A submission could not be taken or did not commit in time (a local condition:
    the control socket reports it; the caller retries with the same statements)."""


class _Methods(Protocol):
    def add(self, name: str, handler: Callable[..., Awaitable[Any]], *,
            streaming: bool = False) -> None: ...


def check_many_bounds(submissions: object) -> list[object]:
    """`ledger_submit_many`'s submissions as a list, or ValueError saying which bound the
    call breaks (count, statements or bytes); the items themselves are checked one by
    one later, each as `ledger_submit` checks its statements."""
    if not isinstance(submissions, list):
        raise ValueError("submissions must be a list of lists of encoded ledger entries")
    if len(submissions) > MAX_SUBMISSIONS_PER_CALL:
        raise ValueError(f"{len(submissions)} submissions in one call; at most "
                         f"{MAX_SUBMISSIONS_PER_CALL}")
    lists = [item for item in submissions if isinstance(item, list)]
    count = sum(len(item) for item in lists)
    if count > MAX_STATEMENTS_PER_CALL:
        raise ValueError(f"{count} statements in one call; at most {MAX_STATEMENTS_PER_CALL}")
    size = sum(len(s) for item in lists for s in item if isinstance(s, bytes))
    if size > MAX_SUBMIT_BYTES_PER_CALL:
        raise ValueError(f"{size} bytes of statements in one call; at most "
                         f"{MAX_SUBMIT_BYTES_PER_CALL}")
    return submissions


def register_control(methods: _Methods, service: LedgerService) -> None:
    """Add `ledger_append`, `ledger_submit`, `ledger_submit_many`, `ledger_lookup` and
    `ledger_status`."""

    async def ledger_append(kind: str, payload_hash: bytes,
                            summary: dict[str, Any] | None = None,
                            idempotency_key: str | None = None,
                            timeout_s: float = APPEND_TIMEOUT_S) -> dict[str, Any]:
        if not isinstance(payload_hash, bytes):
            raise ValueError("payload_hash must be bytes")
        try:
            receipt = await service.append(kind, payload_hash, summary, idempotency_key,
                                           float(timeout_s))
        except (LedgerError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        return receipt_to_plain(receipt)

    async def ledger_submit(statements: list[bytes],
                            timeout_s: float = APPEND_TIMEOUT_S) -> list[dict[str, Any]]:
        if not isinstance(statements, list) or not all(isinstance(s, bytes)
                                                       for s in statements):
            raise ValueError("statements must be a list of encoded ledger entries")
        try:
            decoded = [LedgerEntry.decode(s) for s in statements]
            receipts = await service.submit(decoded, float(timeout_s))
        except LedgerError as exc:
            raise ValueError(str(exc)) from None
        return [receipt_to_plain(r) for r in receipts]

    async def ledger_submit_many(submissions: list[list[bytes]],
                                 timeout_s: float = APPEND_TIMEOUT_S
                                 ) -> list[dict[str, Any]]:
        """Many submissions in one call, each checked and ordered exactly as one
        `ledger_submit` call (concurrently: they share signature checks and commits);
        one answer per submission, in order: {ok, receipts} or {ok: false, error}."""
        items = check_many_bounds(submissions)
        wait = float(timeout_s)
        answers: list[dict[str, Any]] = [{} for _ in items]

        async def one(i: int, statements: Any) -> None:
            try:
                answers[i] = {"ok": True, "receipts": await ledger_submit(statements, wait)}
            except (ValueError, RuntimeError) as exc:  # incl. LedgerServiceError
                answers[i] = {"ok": False, "error": str(exc)}

        async with trio.open_nursery() as nursery:
            for i, statements in enumerate(items):
                nursery.start_soon(one, i, statements)
        return answers

    async def ledger_lookup(idempotency_key: str, author: str | None = None
                            ) -> dict[str, Any]:
        return service.lookup(author or service.peer_id, idempotency_key)

    async def ledger_status() -> dict[str, Any]:
        return service.status(await trio.to_thread.run_sync(service.head))

    methods.add("ledger_append", ledger_append)
    methods.add("ledger_submit", ledger_submit)
    methods.add("ledger_submit_many", ledger_submit_many)
    methods.add("ledger_lookup", ledger_lookup)
    methods.add("ledger_status", ledger_status)


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
            return [*self.service.alone.append_now(statements)]
        queued = self.outbox.submit(statements)
        if not self.service.leader_known():
            # No quorum to wait for: hand them to the proposer and say why they wait
            # (a person approving a gene must not sit through the commit timeout).
            self.token.run_sync_soon(self.service.enqueue_many, list(statements))
            return [replace(q, reason=NO_LEADER_REASON) for q in queued]
        try:
            applied = trio.from_thread.run(self.service.submit, list(statements),
                                           self.timeout_s, trio_token=self.token)
            return [*applied]
        except LedgerServiceError:
            reason = "" if self.service.leader_known() else NO_LEADER_REASON
            return [replace(q, reason=reason) for q in queued]
        except RuntimeError:
            # Called on the trio thread itself (it cannot wait for the loop it blocks):
            # the outbox holds the statements and the loop proposes them.
            trio.lowlevel.current_trio_token().run_sync_soon(self.service.enqueue_many,
                                                             list(statements))
            return list(queued)


__all__ = ["APPEND_TIMEOUT_S", "MAX_STATEMENTS_PER_CALL", "MAX_SUBMISSIONS_PER_CALL",
           "MAX_SUBMIT_BYTES_PER_CALL", "LedgerServiceError", "ServiceRoute",
           "check_many_bounds", "register_control"]
