"""The hash chain's rules, without I/O: sequencing appends and verifying a stored log.

Sequencing (`sequence_batch`) is what every replica does, identically, when it applies a
batch of ordered statements: skip a statement whose (author, idempotency key) is already
in the log (a client retried after a timeout: it gets the original receipt), refuse a
*different* statement under a key already used (reported, not appended, and never an
exception: every replica must reach the same decision without stopping), otherwise place
it at the next index linked to the previous entry's hash.

Verification (`verify_chain`) streams the stored records once, in index order, and stops
at the first problem, naming its index and the reason. For each entry it checks, in this
order: the record exists at its key, decodes strictly, claims its own index, links to the
previous entry's hash, carries a valid author signature, is indexed under its
idempotency key, and its Merkle leaf and every perfect subtree it completes match the
stored tree. Whenever the recomputed tree reaches the size of a stored signed tree head,
the head's signature and root are checked. The author signature covers the statement but
not its position, so a log rewritten *consistently* (an entry dropped and the rest
relinked) passes the link checks: only the signed heads catch it, and the problem is then
reported at the first index after the last head that still matched.

Signed heads attest the order only if their signers are the ones entitled to order the
log: whoever rewrote the log can sign a head with a key of their own. So the caller pins
`trusted_signers` (the region's voters, or the node itself for a region of one): a head
signed by anyone else is a failure, and with `require_head` a non-empty log without any
head is one too (deleting every head must not turn "attested" into "fine"). Finally the
idempotency index must hold exactly one key per entry: a key naming no entry would make
every later statement under it a "duplicate" or "conflict", i.e. silently censored.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

from gd.ledger import merkle
from gd.ledger.entry import GENESIS_PREV, LedgerEntry
from gd.ledger.errors import LocalLedgerError, RemoteLedgerError
from gd.ledger.sth import SignedTreeHead


@dataclass(frozen=True)
class ChainHead:
    """Where the chain ends: its size and the hash the next entry must link to."""

    size: int = 0
    last_hash: bytes = GENESIS_PREV


class AppendStatus(enum.StrEnum):
    APPENDED = "appended"
    DUPLICATE = "duplicate"      # same statement already in the log: same receipt
    CONFLICT = "conflict"        # another statement already holds this idempotency key


@dataclass(frozen=True)
class AppendReceipt:
    """The answer to one append: where the statement is (or the one holding its key)."""

    status: AppendStatus
    index: int
    entry_hash: bytes
    author: str
    idempotency_key: str

    @property
    def ok(self) -> bool:
        return self.status is not AppendStatus.CONFLICT


@dataclass(frozen=True)
class KeyHolder:
    """What the idempotency index says about a key: its entry and that entry's hashes."""

    index: int
    statement_hash: bytes
    entry_hash: bytes


IdempotencyLookup = Callable[[str, str], KeyHolder | None]


@dataclass(frozen=True)
class SequencedBatch:
    """The result of `sequence_batch`: entries to write, receipts, the new chain head."""

    entries: tuple[LedgerEntry, ...]
    receipts: tuple[AppendReceipt, ...]
    head: ChainHead


def sequence_batch(head: ChainHead, statements: Sequence[LedgerEntry],
                   lookup: IdempotencyLookup) -> SequencedBatch:
    """Place `statements` after `head` (see module docstring). Pure: `lookup` reads the
    idempotency index as it was before the batch; keys within the batch are tracked here.

    A statement that arrives already sequenced (copied from another replica) must sit
    exactly where this chain would put it, or LocalLedgerError is raised and nothing is
    placed: the caller is feeding entries out of order.
    """
    placed: list[LedgerEntry] = []
    receipts: list[AppendReceipt] = []
    in_batch: dict[tuple[str, str], KeyHolder] = {}
    size, last = head.size, head.last_hash
    for statement in statements:
        if not isinstance(statement, LedgerEntry):
            raise LocalLedgerError(f"expected a LedgerEntry, got {type(statement).__name__}")
        slot = (statement.author, statement.idempotency_key)
        holder = in_batch.get(slot) or lookup(*slot)
        if holder is not None:
            status = (AppendStatus.DUPLICATE if holder.statement_hash == statement.statement_hash
                      else AppendStatus.CONFLICT)
            receipts.append(AppendReceipt(status, holder.index, holder.entry_hash, *slot))
            continue
        if statement.is_sequenced and (statement.index, statement.prev_hash) != (size, last):
            raise LocalLedgerError(
                f"entry claims index {statement.index} but the chain's next index is {size}")
        entry = statement.sequenced(size, last)
        placed.append(entry)
        in_batch[slot] = KeyHolder(size, entry.statement_hash, entry.entry_hash)
        receipts.append(AppendReceipt(AppendStatus.APPENDED, size, entry.entry_hash, *slot))
        size, last = size + 1, entry.entry_hash
    return SequencedBatch(tuple(placed), tuple(receipts), ChainHead(size, last))


@dataclass(frozen=True)
class VerifyReport:
    """What `ledger verify` found. `first_bad_index` is None when the log is sound."""

    ok: bool
    size: int
    checked: int
    root: bytes
    first_bad_index: int | None = None
    reason: str = ""
    heads_checked: int = 0
    latest_head_size: int | None = None
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok, "size": self.size, "checked": self.checked,
            "root": self.root.hex(), "first_bad_index": self.first_bad_index,
            "reason": self.reason, "heads_checked": self.heads_checked,
            "latest_head_size": self.latest_head_size, "notes": list(self.notes),
        }


class _Problem(Exception):
    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.reason = reason


def verify_chain(records: Iterable[tuple[int, bytes]], *, size: int, last_hash: bytes,
                 nodes: merkle.NodeStore | None = None,
                 heads: Sequence[SignedTreeHead] = (),
                 key_holder: IdempotencyLookup | None = None,
                 trusted_signers: Collection[str] | None = None,
                 require_head: bool = False,
                 key_count: int | None = None) -> VerifyReport:
    """Check a stored log (see module docstring) and report the first bad index and why.

    `records` yields (stored index, raw bytes) in index order; `size` and `last_hash` are
    what the store's metadata claims; `nodes` is the stored Merkle tree; `heads` the
    stored signed tree heads; `key_holder` reads the idempotency index and `key_count` is
    how many keys it holds. `trusted_signers`: the only keys whose heads count (None:
    any valid signature, which proves nothing against someone who can write the disk);
    `require_head`: a non-empty log must carry at least one head.
    """
    frontier = merkle.Frontier()
    pending = sorted(heads, key=lambda h: h.size)
    matched_size = 0
    heads_checked = 0
    prev = GENESIS_PREV
    expected = 0
    try:
        while pending and pending[0].size == 0:
            matched_size, heads_checked = _check_head(
                pending.pop(0), frontier, matched_size, heads_checked, trusted_signers)
        for stored_index, raw in records:
            if stored_index != expected:
                raise _Problem(expected, f"entry {expected} is missing (next stored key is "
                                         f"{stored_index})")
            entry = _check_entry(expected, raw, prev, key_holder)
            for level, position, value in frontier.push(entry.leaf_hash):
                if nodes is not None and _stored_node(nodes, level, position) != value:
                    raise _Problem(expected, f"stored Merkle node (level {level}, index "
                                             f"{position}) does not match the entries")
            prev = entry.entry_hash
            expected += 1
            while pending and pending[0].size <= expected:
                matched_size, heads_checked = _check_head(
                    pending.pop(0), frontier, matched_size, heads_checked, trusted_signers)
        if expected != size:
            raise _Problem(expected, f"metadata says {size} entries but {expected} are stored")
        while pending:
            head = pending.pop(0)
            raise _Problem(expected, f"signed tree head at size {head.size} is beyond the "
                                     f"log's {expected} entries")
        if prev != last_hash:
            raise _Problem(max(expected - 1, 0),
                           "metadata's last entry hash does not match the last entry")
        if key_count is not None and key_count != expected:
            raise _Problem(expected, f"the idempotency index holds {key_count} keys for "
                                     f"{expected} entries")
        if require_head and expected > 0 and not heads:
            raise _Problem(0, f"no signed tree head: the order of the {expected} entries is "
                              "not attested by any trusted signer")
    except _Problem as problem:
        return VerifyReport(ok=False, size=size, checked=problem.index, root=frontier.root(),
                            first_bad_index=problem.index, reason=problem.reason,
                            heads_checked=heads_checked,
                            latest_head_size=heads[-1].size if heads else None)
    notes: list[str] = []
    if not heads:
        notes.append("no signed tree head: the order is not attested")
    elif matched_size < expected:
        notes.append(f"entries {matched_size}..{expected - 1} come after the latest signed "
                     "head: not attested yet")
    if trusted_signers is None and heads:
        notes.append("head signers not checked against pinned voters")
    return VerifyReport(ok=True, size=size, checked=expected, root=frontier.root(),
                        heads_checked=heads_checked,
                        latest_head_size=max((h.size for h in heads), default=None),
                        notes=tuple(notes))


def _check_entry(index: int, raw: bytes, prev: bytes,
                 key_holder: IdempotencyLookup | None) -> LedgerEntry:
    try:
        entry = LedgerEntry.decode(raw)
    except RemoteLedgerError as exc:
        raise _Problem(index, str(exc)) from None
    if entry.index != index:
        raise _Problem(index, f"entry stored at {index} claims index {entry.index}")
    if entry.prev_hash != prev:
        raise _Problem(index, "prev_hash does not link to the previous entry's hash")
    try:
        entry.verify_signature()
    except RemoteLedgerError as exc:
        raise _Problem(index, str(exc)) from None
    if key_holder is not None:
        holder = key_holder(entry.author, entry.idempotency_key)
        if holder is None or holder.index != index or holder.entry_hash != entry.entry_hash \
                or holder.statement_hash != entry.statement_hash:
            raise _Problem(index, "idempotency index does not point at this entry")
    return entry


def _stored_node(nodes: merkle.NodeStore, level: int, position: int) -> bytes | None:
    try:
        return nodes.get_node(level, position)
    except (LocalLedgerError, RemoteLedgerError):
        return None


def _check_head(head: SignedTreeHead, frontier: merkle.Frontier, matched_size: int,
                heads_checked: int,
                trusted_signers: Collection[str] | None) -> tuple[int, int]:
    if head.size != frontier.size:
        raise _Problem(frontier.size, f"signed tree head at size {head.size} is out of order")
    if trusted_signers is not None and head.signer not in trusted_signers:
        raise _Problem(matched_size, f"signed tree head at size {head.size} is signed by "
                                     f"{head.signer}, not by a pinned voter")
    try:
        head.verify()
    except RemoteLedgerError as exc:
        raise _Problem(max(head.size - 1, 0), f"signed tree head at size {head.size}: "
                                              f"{exc}") from None
    if head.root != frontier.root():
        raise _Problem(matched_size, f"entries {matched_size}..{head.size - 1} do not "
                                     f"reproduce the root signed at size {head.size}")
    return head.size, heads_checked + 1
