"""Fork detection: cross-checking the signed tree heads a node sees (sans-I/O).

Raft keeps the region's replicas in one order as long as members only crash; it does not
stop a leader that lies, nor an operator who rewrites a disk. What a node *can* do is
notice. Every head is a signed commitment to a whole history, so two heads for one log
that do not fit together are proof that somebody published two histories:

* **same size, different root** — two histories of one length. Conclusive on its own;
  when one signer signed both, it is that signer's signed equivocation.
* **not an extension** — a larger head whose tree does not extend a smaller one: the
  consistency proof between them (RFC 9162 §2.1.4) fails. An honest log can always prove
  consistency, so a proof that does not verify — from whoever supplies it — is an alarm.

`ForkMonitor` is fed heads (`observe`) and proofs (`check`) and answers with alarms and
with the consistency proofs it still needs (`ProofRequest`: fetch
``consistency_proof(old.size, new.size)`` from the new head's source, or compute it from
the local ledger when it holds both sizes). It never reads a clock, a socket or a disk;
`node/` gossips the heads, fetches proofs, logs and counts the alarms, and stores them
with `Ledger.record_alarm`.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from gd.genome import canonical, checks
from gd.genome.errors import DecodeError, ValidationError
from gd.ledger.errors import ProofError, RemoteLedgerError
from gd.ledger.merkle import ConsistencyProof, verify_consistency
from gd.ledger.sth import SignedTreeHead

# Heads kept per log. One per distinct size; gossip brings a head per commit batch, and
# only neighbours in size are ever compared, so the oldest (smallest) heads are dropped
# first. 4096 heads is ~1 MiB.
MAX_TRACKED_HEADS = 4096
# Alarms kept in memory for `alarms` (all of them go to the caller as they happen).
MAX_KEPT_ALARMS = 1024
MAX_SOURCE_LEN = 128


class AlarmKind(enum.StrEnum):
    SAME_SIZE_DIFFERENT_ROOT = "same_size_different_root"
    NOT_AN_EXTENSION = "not_an_extension"


@dataclass(frozen=True)
class ForkAlarm:
    """Evidence of a fork: two signed heads that cannot both be honest, and why."""

    kind: AlarmKind
    first: SignedTreeHead
    second: SignedTreeHead
    detail: str
    source: str = ""

    @property
    def log_id(self) -> str:
        return self.first.log_id

    @property
    def equivocation(self) -> bool:
        """One signer signed both heads: the alarm incriminates that key."""
        return self.first.signer == self.second.signer

    def to_plain(self) -> dict[str, Any]:
        return {"detail": self.detail, "first": self.first.to_plain(), "kind": self.kind.value,
                "second": self.second.to_plain(), "source": self.source}

    def encode(self) -> bytes:
        return canonical.encode(self.to_plain())

    @classmethod
    def decode(cls, raw: bytes) -> ForkAlarm:
        try:
            data = checks.require_map("alarm", canonical.decode(raw))
            checks.known_keys("alarm", data, {"detail", "first", "kind", "second", "source"})
            return cls(kind=AlarmKind(data["kind"]),
                       first=SignedTreeHead.from_plain(data["first"]),
                       second=SignedTreeHead.from_plain(data["second"]),
                       detail=checks.text("detail", data["detail"]),
                       source=checks.text("source", data["source"], MAX_SOURCE_LEN))
        except (DecodeError, ValidationError, KeyError, ValueError) as exc:
            raise RemoteLedgerError(f"malformed fork alarm: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "log_id": self.log_id, "detail": self.detail,
                "source": self.source, "equivocation": self.equivocation,
                "first": self.first.to_json(), "second": self.second.to_json()}


@dataclass(frozen=True)
class ProofRequest:
    """A consistency proof the monitor needs: does `new` extend `old`?"""

    old: SignedTreeHead
    new: SignedTreeHead
    source: str = ""

    @property
    def sizes(self) -> tuple[int, int]:
        return self.old.size, self.new.size


@dataclass(frozen=True)
class Observation:
    """What observing one head produced."""

    new: bool
    alarms: tuple[ForkAlarm, ...] = ()
    requests: tuple[ProofRequest, ...] = ()


def same_size_alarm(a: SignedTreeHead, b: SignedTreeHead, source: str = "") -> ForkAlarm | None:
    """An alarm if two heads of one log and size disagree on the root, else None."""
    if a.log_id != b.log_id or a.size != b.size or a.root == b.root:
        return None
    return ForkAlarm(AlarmKind.SAME_SIZE_DIFFERENT_ROOT, a, b,
                     f"two roots for size {a.size}: {a.root.hex()[:16]}… and "
                     f"{b.root.hex()[:16]}…", source)


def check_extension(old: SignedTreeHead, new: SignedTreeHead, proof: ConsistencyProof,
                    source: str = "") -> ForkAlarm | None:
    """An alarm unless `proof` shows that head `new` extends head `old`.

    A proof for other sizes than the two heads' is a wrong answer, not evidence:
    RemoteLedgerError, and the caller asks again.
    """
    if old.log_id != new.log_id:
        raise RemoteLedgerError("heads of different logs cannot be compared")
    if old.size > new.size:
        old, new = new, old
    if (proof.old_size, proof.new_size) != (old.size, new.size):
        raise RemoteLedgerError(
            f"proof is for sizes {proof.old_size}->{proof.new_size}, asked "
            f"{old.size}->{new.size}")
    try:
        verify_consistency(old.size, new.size, old.root, new.root, proof.path)
    except ProofError as exc:
        return ForkAlarm(AlarmKind.NOT_AN_EXTENSION, old, new,
                         f"size {new.size} does not extend size {old.size}: {exc}", source)
    return None


class ForkMonitor:
    """Tracks the heads seen for one log and cross-checks them (see module docstring)."""

    def __init__(self, log_id: str, trusted_signers: Collection[str] | None = None,
                 max_heads: int = MAX_TRACKED_HEADS) -> None:
        self.log_id = log_id
        self.trusted_signers = frozenset(trusted_signers) if trusted_signers is not None else None
        self.max_heads = max_heads
        self._sizes: list[int] = []
        self._heads: dict[int, SignedTreeHead] = {}
        self._verified: set[tuple[bytes, bytes]] = set()
        self._pending: dict[tuple[bytes, bytes], ProofRequest] = {}
        self.alarms: list[ForkAlarm] = []

    def observe(self, head: SignedTreeHead, source: str = "") -> Observation:
        """Take in a head from `source` (a peer id, or "local").

        A head for another log, with a bad signature or from an untrusted signer raises
        RemoteLedgerError and changes nothing: it proves nothing about anybody.
        """
        if head.log_id != self.log_id:
            raise RemoteLedgerError(f"head is for log {head.log_id!r}, not {self.log_id!r}")
        head.verify(self.trusted_signers)
        known = self._heads.get(head.size)
        if known is not None:
            alarm = same_size_alarm(known, head, source)
            return Observation(new=False, alarms=self._raise(alarm))
        index = bisect.bisect_left(self._sizes, head.size)
        self._sizes.insert(index, head.size)
        self._heads[head.size] = head
        requests = []
        if index > 0:
            requests.append(self._request(self._heads[self._sizes[index - 1]], head, source))
        if index + 1 < len(self._sizes):
            requests.append(self._request(head, self._heads[self._sizes[index + 1]], source))
        self._evict()
        return Observation(new=True, requests=tuple(r for r in requests if r is not None))

    def check(self, request: ProofRequest, proof: ConsistencyProof,
              source: str = "") -> tuple[ForkAlarm, ...]:
        """Verify the proof answering `request`; alarms if the heads do not fit."""
        alarm = check_extension(request.old, request.new, proof, source or request.source)
        pair = (request.old.head_hash, request.new.head_hash)
        self._pending.pop(pair, None)
        if alarm is None:
            self._verified.add(pair)
        return self._raise(alarm)

    def pending(self) -> tuple[ProofRequest, ...]:
        """Requests not yet answered (to retry after a peer went quiet)."""
        return tuple(self._pending.values())

    def head(self, size: int) -> SignedTreeHead | None:
        return self._heads.get(size)

    @property
    def largest(self) -> SignedTreeHead | None:
        return self._heads[self._sizes[-1]] if self._sizes else None

    def _request(self, old: SignedTreeHead, new: SignedTreeHead,
                 source: str) -> ProofRequest | None:
        pair = (old.head_hash, new.head_hash)
        if pair in self._verified:
            return None
        request = ProofRequest(old, new, source)
        self._pending[pair] = request
        return request

    def _raise(self, alarm: ForkAlarm | None) -> tuple[ForkAlarm, ...]:
        if alarm is None:
            return ()
        self.alarms.append(alarm)
        del self.alarms[:-MAX_KEPT_ALARMS]
        return (alarm,)

    def _evict(self) -> None:
        while len(self._sizes) > self.max_heads:
            dropped = self._heads.pop(self._sizes.pop(0))
            for pair in [p for p in self._pending if dropped.head_hash in p]:
                del self._pending[pair]
