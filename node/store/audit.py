"""The sovereignty audit log: a hash chain of every gene in or out and every policy event.

Each record holds what an auditor asks after the fact: which gene (id and version hash)
went to or came from which peer, in which direction, under which rule, when; and every
policy change, agreement event, approval, rejection, rollback and deletion. Records live
in the Cortex sub-database ``sov_audit`` under their index (u64 big-endian), each linked
to the previous one:

    hash_i = SHA-256(AUDIT_TAG || hash_{i-1} || canonical(body_i)),  hash_{-1} = 32 zeros

so editing, removing or reordering any stored record breaks the chain at that index, and
`AuditLog.verify` names the first bad one. What a chain alone cannot show is a cut tail
(the newest records removed): `head()` gives (size, hash) for anchoring on the ledger,
the way Certificate Transparency logs publish signed tree heads.

A record can be appended inside a caller's LMDB transaction (`append_in`, and
`append_many_in` for a batch), so a policy change and its audit record, or a received
gene and its `gene_received` record, commit together or not at all.

Gene names, purposes and parameters are never written here: ids and hashes suffice to
answer "who got what", and the log must stay clean after a right-to-deletion request.
"""

from __future__ import annotations

import csv
import io
import json
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Protocol

from gd.crdt.clock import Clock
from gd.genome import canonical, checks
from gd.genome.errors import DecodeError, ValidationError
from gd.genome.gene import Gene
from gd.node.clock import SYSTEM_CLOCK
from gd.node.store import audit_signal
from gd.node.store.cortex import Cortex
from gd.node.store.lmdb_tables import Txn
from gd.protocol.sovereignty import SentGene, ShareDecision

AUDIT_DB: Final = "sov_audit"
AUDIT_TAG: Final = b"gd-audit/1\x00"
GENESIS: Final = bytes(32)
# Detail values are short scalars (a reason, a rule id, a count); anything longer belongs
# in the Cortex, not in a log that is exported and shipped to auditors.
MAX_DETAIL_FIELDS: Final = 16
MAX_DETAIL_TEXT: Final = 512
EXPORT_FORMATS: Final = ("json", "csv")
CSV_COLUMNS: Final = ("index", "time_ms", "kind", "peer", "gene_id", "version_hash",
                      "direction", "rule", "detail", "hash")
_U64 = struct.Struct(">Q")


class AuditKind:
    """Record kinds (plain strings in the log, so an export needs no enum to read)."""

    GENE_SENT: Final = "gene_sent"
    GENE_RECEIVED: Final = "gene_received"
    GENE_REFUSED: Final = "gene_refused"
    POLICY: Final = "policy_change"
    AGREEMENT: Final = "agreement"
    ADAPTATION: Final = "adaptation"
    FORGET: Final = "forget"


class AuditError(RuntimeError):
    """The audit log cannot be read or written (not a verification failure)."""


@dataclass(frozen=True)
class AuditRecord:
    index: int
    time_ms: int
    kind: str
    peer: str = ""
    gene_id: str = ""
    version_hash: bytes = b""
    direction: str = ""
    rule: str = ""
    detail: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    prev_hash: bytes = GENESIS
    hash: bytes = GENESIS

    def body(self) -> dict[str, Any]:
        return {"detail": dict(self.detail), "direction": self.direction,
                "gene_id": self.gene_id, "index": self.index, "kind": self.kind,
                "peer": self.peer, "rule": self.rule, "time_ms": self.time_ms,
                "version_hash": self.version_hash}

    def to_json(self) -> dict[str, Any]:
        data = self.body()
        data["version_hash"] = self.version_hash.hex()
        data["hash"] = self.hash.hex()
        data["prev_hash"] = self.prev_hash.hex()
        return data


def chain_hash(prev: bytes, body: Mapping[str, Any]) -> bytes:
    return canonical.sha256(AUDIT_TAG + prev + canonical.encode(body))


def body_hash(prev: bytes, body: Mapping[str, Any], encoded: bytes) -> bytes:
    """`chain_hash(prev, body)` of a body whose canonical bytes are `encoded` (what an
    append computes once, `body_bytes`); the one place an append hashes a record."""
    return canonical.sha256(AUDIT_TAG + prev + encoded)


# A stored record is the canonical map {"body": ..., "hash": ..., "prev": ...}: msgpack
# is compositional and these keys are already in canonical (sorted) order, so its bytes
# are this header, the body's canonical bytes, and the two hashes' entries.
_STORED_HEAD: Final = b"\x83" + canonical.encode_plain("body")  # a map of 3, "body"
_HASH_KEY: Final = canonical.encode_plain("hash")
_PREV_KEY: Final = canonical.encode_plain("prev")


def body_bytes(body: dict[str, Any]) -> bytes:
    """`canonical.encode(body)` of a record body `_record` built (its keys in sorted
    order, `_detail`'s checked scalars), without the recursive normalisation that was
    most of an append's CPU (issue 15): the same bytes whenever `encode` accepts the
    body. An integer msgpack cannot hold goes through `encode`, which raises as before."""
    try:
        return canonical.encode_plain(body)
    except OverflowError:
        return canonical.encode(body)


def stored_bytes(body: bytes, digest: bytes, prev: bytes) -> bytes:
    """`canonical.encode({"body": <body>, "hash": digest, "prev": prev})` from the
    body's canonical bytes (see `_STORED_HEAD`)."""
    return (_STORED_HEAD + body + _HASH_KEY + canonical.encode_plain(digest) + _PREV_KEY
            + canonical.encode_plain(prev))


def _detail(detail: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in sorted((detail or {}).items()):
        if len(out) == MAX_DETAIL_FIELDS:
            raise ValidationError("detail", f"more than {MAX_DETAIL_FIELDS} fields")
        checks.feature(f"detail.{key}", key)
        if isinstance(value, str):
            value = value[:MAX_DETAIL_TEXT]
            checks.text(f"detail.{key}", value, MAX_DETAIL_TEXT)
        elif isinstance(value, float):
            checks.finite(f"detail.{key}", value)
        elif not isinstance(value, bool | int):
            raise ValidationError(f"detail.{key}", f"only scalars, got {value!r}")
        out[key] = value
    return out


@dataclass(frozen=True)
class AuditVerifyReport:
    size: int
    bad_index: int | None = None
    reason: str = ""
    head: bytes = GENESIS

    @property
    def ok(self) -> bool:
        return self.bad_index is None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "size": self.size, "bad_index": self.bad_index,
                "reason": self.reason, "head": self.head.hex()}


class AuditSink(Protocol):
    """What the policy store and the adaptation workflow write audit records through."""

    def append_in(self, txn: Txn, kind: str, **fields: Any) -> AuditRecord: ...


class AuditLog:
    """The hash-chained audit log in one Cortex sub-database."""

    def __init__(self, cortex: Cortex, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.cortex = cortex
        self.db = cortex.open_db(AUDIT_DB)
        self.clock = clock  # stamps each record's time_ms (the daemon passes its own)

    # -- writing ------------------------------------------------------------------------
    def append_in(self, txn: Txn, kind: str, *, peer: str = "",
                  gene_id: str = "", version_hash: bytes = b"", direction: str = "",
                  rule: str = "", detail: Mapping[str, Any] | None = None,
                  time_ms: int | None = None) -> AuditRecord:
        """Append one record inside `txn` (it commits with the caller's other writes)."""
        return self.append_many_in(txn, [(kind, dict(
            peer=peer, gene_id=gene_id, version_hash=version_hash, direction=direction,
            rule=rule, detail=detail, time_ms=time_ms))])[0]

    def append_many_in(self, txn: Txn, entries: Sequence[tuple[str, Mapping[str, Any]]]
                       ) -> list[AuditRecord]:
        """Append `(kind, fields)` records, in order, inside `txn` (see `_append`). The
        stored bytes are exactly those of N `append_in` calls. `fields` are
        `append_in`'s keywords."""
        records: list[AuditRecord] = []
        self._append(txn, entries, records)
        return records

    def _append(self, txn: Txn, entries: Sequence[tuple[str, Mapping[str, Any]]],
                records: list[AuditRecord] | None) -> int:
        """Append the records and return how many; each `AuditRecord` goes into
        `records` unless None (the sync paths only count them). Per call, not per
        record (issue 15: a record was ~20 µs on both sides of every synced gene): the
        log's tail is read once and (index, hash) carried from each record to the next;
        the clock is read once (a call's records share their time); a text field that
        repeats (the peer, the rule) is checked once; and the records, whose keys only
        grow, are appended at the table's end in one call."""
        if not entries:
            return 0
        index, prev = self._tail(txn)
        now_ms = int(self.clock.wall() * 1000)
        checked: set[tuple[str, str]] = set()
        rows: list[tuple[bytes, bytes]] = []
        for kind, fields in entries:
            plain, body, digest = self._record(index, prev, kind, now_ms, checked, **fields)
            rows.append((_U64.pack(index), stored_bytes(body, digest, prev)))
            if records is not None:
                records.append(AuditRecord(
                    index, plain["time_ms"], kind, plain["peer"], plain["gene_id"],
                    plain["version_hash"], plain["direction"], plain["rule"],
                    MappingProxyType(plain["detail"]), prev, digest))
            index, prev = index + 1, digest
        _, added = txn.cursor(db=self.db).putmulti(rows, append=True)
        if added != len(rows):  # lmdb skips an append below the last key, silently
            raise AuditError("the audit log's tail moved during an append")
        audit_signal.appended(self.cortex)  # the daemon acts on it: no size poll
        return len(rows)

    @staticmethod
    def _record(index: int, prev: bytes, kind: str, now_ms: int,
                checked: set[tuple[str, str]], *, peer: str = "", gene_id: str = "",
                version_hash: bytes = b"", direction: str = "", rule: str = "",
                detail: Mapping[str, Any] | None = None,
                time_ms: int | None = None) -> tuple[dict[str, Any], bytes, bytes]:
        """One checked record body at `index`, linked to `prev`: its plain form, its
        canonical bytes (what the hash covers and the stored record holds) and its
        hash. `checked` holds the (field, value) pairs this call already checked."""
        for name, value in (("kind", kind), ("peer", peer), ("gene_id", gene_id),
                            ("direction", direction), ("rule", rule)):
            if (name, value) not in checked:
                if name == "kind":
                    checks.slug(name, value)
                else:
                    checks.text(name, value, 256)
                checked.add((name, value))
        if not isinstance(version_hash, bytes) or len(version_hash) not in (0, 32):
            raise ValidationError("version_hash", "expected 32 bytes or none")
        stamp = now_ms if time_ms is None else checks.uint("time_ms", time_ms)
        plain = {"detail": _detail(detail), "direction": direction, "gene_id": gene_id,
                 "index": index, "kind": kind, "peer": peer, "rule": rule,
                 "time_ms": stamp, "version_hash": version_hash}
        body = body_bytes(plain)
        return plain, body, body_hash(prev, plain, body)

    def append(self, kind: str, **fields: Any) -> AuditRecord:
        """Append one record in its own transaction."""
        return self.cortex.write(lambda txn: self.append_in(txn, kind, **fields))

    def _tail(self, txn: Txn) -> tuple[int, bytes]:
        cur = txn.cursor(db=self.db)
        if not cur.last():
            return 0, GENESIS
        try:
            stored = canonical.decode(cur.value())
            return _U64.unpack(cur.key())[0] + 1, stored["hash"]
        except (DecodeError, KeyError, TypeError, struct.error) as exc:
            raise AuditError(f"the last audit record is unreadable ({exc}): run "
                             "`gd-node audit verify`") from None

    def record_sent(self, peer: str, sent: Iterable[SentGene], *,
                    time_ms: int | None = None) -> int:
        """One record per gene a sync batch carried to `peer` (what `OutboundFilter`
        lists), all in one transaction; returns how many."""
        items = list(sent)
        return self.cortex.write(
            lambda txn: self.sent_in(txn, peer, items, time_ms=time_ms)) if items else 0

    def sent_in(self, txn: Txn, peer: str, sent: Sequence[SentGene], *,
                time_ms: int | None = None) -> int:
        """`record_sent` inside the caller's transaction."""
        entries: list[tuple[str, Mapping[str, Any]]] = []
        for item in sent:
            detail: dict[str, Any] = {}
            if item.outgoing is not item.original:
                detail = {"source_id": item.original.id,
                          "source_version": item.original.version,
                          "anonymized": item.decision.anonymize}
            entries.append((AuditKind.GENE_SENT, dict(
                peer=peer, gene_id=item.outgoing.id,
                version_hash=item.outgoing.version_hash, direction="out",
                rule=item.decision.rule_id, detail=detail, time_ms=time_ms)))
        return self._append(txn, entries, None)

    def record_received(self, peer: str, accepted: Iterable[tuple[Gene, ShareDecision]],
                        refused: Iterable[tuple[Gene, ShareDecision]] = (), *,
                        time_ms: int | None = None) -> int:
        """One record per gene `InboundFilter` accepted or refused from `peer`."""
        acc, ref = list(accepted), list(refused)
        if not acc and not ref:
            return 0
        return self.cortex.write(
            lambda txn: self.received_in(txn, peer, acc, ref, time_ms=time_ms))

    def received_in(self, txn: Txn, peer: str,
                    accepted: Sequence[tuple[Gene, ShareDecision]],
                    refused: Sequence[tuple[Gene, ShareDecision]] = (), *,
                    time_ms: int | None = None) -> int:
        """`record_received` inside the caller's transaction: the receiver writes a
        group's records in the transaction that stores its genes, so a crash keeps
        both or neither (a stored gene always has its `gene_received` record)."""
        items = [(AuditKind.GENE_RECEIVED, g, d) for g, d in accepted]
        items += [(AuditKind.GENE_REFUSED, g, d) for g, d in refused]
        return self._append(txn, [(kind, dict(
            peer=peer, gene_id=gene.id, version_hash=gene.version_hash, direction="in",
            rule=decision.rule_id,
            detail={} if decision.allowed else {"reason": decision.reason},
            time_ms=time_ms)) for kind, gene, decision in items], None)

    # -- reading ------------------------------------------------------------------------
    def __len__(self) -> int:
        with self.cortex.env.begin() as txn:
            return int(txn.stat(self.db)["entries"])

    def settled_len(self) -> int:
        """The length once any write in progress has committed or aborted: a write
        transaction waits for it (one woken by `audit_signal` sees the new record)."""
        txn = self.cortex.env.begin(write=True)
        try:
            return int(txn.stat(self.db)["entries"])
        finally:
            txn.abort()

    def head(self) -> tuple[int, bytes]:
        """(size, hash of the last record): what the ledger anchors."""
        with self.cortex.env.begin() as txn:
            return self._tail(txn)

    def records(self, *, since_ms: int | None = None, kind: str | None = None
                ) -> Iterator[AuditRecord]:
        """Every record in order (raises `AuditError` on one it cannot decode)."""
        with self.cortex.env.begin() as txn:
            for key, raw in txn.cursor(db=self.db):
                record = _decode_record(key, raw)
                if since_ms is not None and record.time_ms < since_ms:
                    continue
                if kind is not None and record.kind != kind:
                    continue
                yield record

    def peers_sent(self, gene_id: str) -> list[str]:
        """Peers that were sent any version of `gene_id`, or a gene derived from it."""
        peers: set[str] = set()
        for record in self.records(kind=AuditKind.GENE_SENT):
            if gene_id in (record.gene_id, record.detail.get("source_id")):
                peers.add(record.peer)
        return sorted(peers)

    def verify(self) -> AuditVerifyReport:
        """Recompute the chain; the first bad index and why, or ok."""
        prev = GENESIS
        expected = 0
        with self.cortex.env.begin() as txn:
            for key, raw in txn.cursor(db=self.db):
                try:
                    index = _U64.unpack(key)[0]
                except struct.error:
                    return AuditVerifyReport(expected, expected, f"key {key!r} is not an index")
                if index != expected:
                    return AuditVerifyReport(expected, expected,
                                             f"record {expected} is missing (next is {index})")
                try:
                    stored = canonical.decode(raw)
                    body, digest, link = stored["body"], stored["hash"], stored["prev"]
                    if set(stored) != {"body", "hash", "prev"}:
                        raise ValueError("unexpected fields")
                except (DecodeError, KeyError, TypeError, ValueError) as exc:
                    return AuditVerifyReport(expected, index, f"undecodable record: {exc}")
                if link != prev:
                    return AuditVerifyReport(expected, index,
                                             "does not link to the previous record")
                if not isinstance(body, dict) or body.get("index") != index:
                    return AuditVerifyReport(expected, index, "body names another index")
                if chain_hash(prev, body) != digest:
                    return AuditVerifyReport(expected, index,
                                             "content does not match its hash (edited)")
                prev = digest
                expected += 1
        return AuditVerifyReport(expected, None, "", prev)

    def export(self, fmt: str = "json", since_ms: int | None = None) -> str:
        """The records (from `since_ms` on) as a JSON array or CSV with a header."""
        if fmt not in EXPORT_FORMATS:
            raise ValidationError("format", f"{fmt!r} is not one of {EXPORT_FORMATS}")
        rows = [r.to_json() for r in self.records(since_ms=since_ms)]
        if fmt == "json":
            return json.dumps(rows, indent=2, sort_keys=True)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        for row in rows:
            row["detail"] = json.dumps(row["detail"], sort_keys=True)
            writer.writerow(row)
        return out.getvalue()


def _decode_record(key: bytes, raw: bytes) -> AuditRecord:
    try:
        stored = canonical.decode(raw)
        body = stored["body"]
        return AuditRecord(
            index=_U64.unpack(key)[0], time_ms=body["time_ms"], kind=body["kind"],
            peer=body["peer"], gene_id=body["gene_id"], version_hash=body["version_hash"],
            direction=body["direction"], rule=body["rule"],
            detail=MappingProxyType(dict(body["detail"])), prev_hash=stored["prev"],
            hash=stored["hash"])
    except (DecodeError, KeyError, TypeError, struct.error) as exc:
        raise AuditError(f"audit record {key.hex()} is unreadable: {exc}") from None


# -- the ledger hook -----------------------------------------------------------------------


class LedgerSink(Protocol):
    """Where approvals, rejections, rollbacks, agreements and revocations are recorded.

    `kind` is a ledger entry kind (`gd.ledger.entry.EntryKind` values: "agreement",
    "promotion", "revocation"); `payload_hash` the SHA-256 of the payload kept locally;
    `summary` a few public scalars (never gene content); `idempotency_key` makes a
    retried record one entry. The node wires the regional ledger in.
    """

    def append(self, kind: str, payload_hash: bytes, summary: dict[str, Any],
               idempotency_key: str) -> object: ...  # a receipt, which callers ignore


@dataclass
class MemoryLedgerSink:
    """A list-backed sink (tests, and callers that collect records to submit later)."""

    records: list[tuple[str, bytes, dict[str, Any], str]] = field(default_factory=list)

    def append(self, kind: str, payload_hash: bytes, summary: dict[str, Any],
               idempotency_key: str) -> None:
        if (kind, idempotency_key) in {(k, key) for k, _, _, key in self.records}:
            return
        self.records.append((kind, payload_hash, dict(summary), idempotency_key))


def idempotency_key(kind: str, *parts: str | int | bytes) -> str:
    """A ledger idempotency key (matches the ledger's id syntax) for one logical event."""
    return f"{kind}:{canonical.sha256(canonical.encode(list(parts))).hex()[:48]}"
