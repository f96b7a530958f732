"""The right to deletion, sender side: local `forget` audit records become signed
tombstones queued per peer that received the gene (issue 7).

A local `genes forget` (CLI or daemon) appends a `forget` audit record; `queue_tombstones`
scans the audit log past the position it stored, finds the peers the audit log says
received the gene (or a gene derived from it) and queues each a `Tombstone` signed by us
naming the ids that peer holds. The delivery (`gd.node.services.sovereignty_delivery`)
sends them with the agreements and drops them once acknowledged.
"""

from __future__ import annotations

import contextlib
import struct
from typing import Any, Final

from gd.genome import canonical
from gd.genome.errors import DecodeError
from gd.genome.identity import NodeKey
from gd.node.clock import hlc_now
from gd.node.store.audit import AuditKind, AuditLog
from gd.node.store.cortex import Cortex
from gd.protocol.agreement_messages import MAX_TOMBSTONE_IDS, Tombstone

FORGET_OUTBOX_DB: Final = "sov_forget_outbox"
SERVICE_META_DB: Final = "sov_service_meta"
_AUDIT_SCANNED: Final = b"audit_scanned"
# How far the forget scan may run ahead of its stored position: a restart re-reads at most
# this many audit records (milliseconds), and no write is spent on a scan that found none.
SCAN_PERSIST_EVERY: Final = 4096
_SEP: Final = b"\x00"
_U64 = struct.Struct(">Q")


class ForgetOutbox:
    """Tombstones waiting for each peer, in the Cortex (`FORGET_OUTBOX_DB`)."""

    def __init__(self, cortex: Cortex, audit: AuditLog, key: NodeKey, log: Any) -> None:
        self.cortex = cortex
        self.audit = audit
        self.key = key
        self.log = log
        self._forget_db = cortex.open_db(FORGET_OUTBOX_DB)
        self._meta_db = cortex.open_db(SERVICE_META_DB)
        self._scanned: int | None = None  # audit index the forget scan has reached
        self._persisted = 0  # ... and the one stored in SERVICE_META_DB

    def forget_outbox(self, peer: str) -> list[tuple[int, bytes]]:
        prefix = peer.encode() + _SEP
        with self.cortex.env.begin() as txn:
            cur = txn.cursor(db=self._forget_db)
            if not cur.set_range(prefix):
                return []
            out = []
            for key, value in cur:
                if not key.startswith(prefix):
                    break
                out.append((_U64.unpack(key[len(prefix):])[0], bytes(value)))
            return out

    def forget_delivered(self, peer: str, upto: int) -> None:
        prefix = peer.encode() + _SEP
        keys = [prefix + _U64.pack(seq) for seq, _ in self.forget_outbox(peer) if seq <= upto]

        def run(txn: Any) -> None:
            for key in keys:
                txn.delete(key, db=self._forget_db)

        self.cortex.write(run)

    def _recipients(self, gene_id: str) -> dict[str, set[str]]:
        """peer -> the ids under which it received `gene_id` (itself or derived forms)."""
        out: dict[str, set[str]] = {}
        for record in self.audit.records(kind=AuditKind.GENE_SENT):
            if gene_id in (record.gene_id, record.detail.get("source_id")):
                out.setdefault(record.peer, set()).add(record.gene_id)
        return out

    def queue_tombstones(self) -> int:
        """Worker thread: turn local `forget` audit records not seen yet into tombstones
        in the forget outbox; returns how many were queued. The scan position is stored
        with them, so a restart neither repeats nor skips one; between forgets it is
        stored only every `SCAN_PERSIST_EVERY` records (a restart rescans at most those,
        instead of one fsync'd write per sync batch)."""
        with self.cortex.env.begin() as txn:
            if self._scanned is None:
                raw = txn.get(_AUDIT_SCANNED, db=self._meta_db)
                self._scanned = self._persisted = _U64.unpack(raw)[0] if raw else 0
            start = self._scanned
            forgotten, end = _local_forgets(txn, self.audit, start)
        if end == start:
            return 0
        if not forgotten and end - self._persisted < SCAN_PERSIST_EVERY:
            self._scanned = end
            return 0
        stones: list[Tombstone] = []
        hlc = hlc_now()
        for gene_id in forgotten:
            for peer, ids in sorted(self._recipients(gene_id).items()):
                ordered = sorted(ids)
                for i in range(0, len(ordered), MAX_TOMBSTONE_IDS):
                    stones.append(Tombstone.create(self.key, peer,
                                                   ordered[i:i + MAX_TOMBSTONE_IDS], hlc))

        def run(txn: Any) -> None:
            for stone in stones:
                prefix = stone.peer.encode() + _SEP
                last = 0
                cur = txn.cursor(db=self._forget_db)
                if cur.set_range(prefix):
                    for key, _ in cur:
                        if not key.startswith(prefix):
                            break
                        last = _U64.unpack(key[len(prefix):])[0]
                txn.put(prefix + _U64.pack(last + 1), stone.encode(), db=self._forget_db)
            txn.put(_AUDIT_SCANNED, _U64.pack(end), db=self._meta_db)

        self.cortex.write(run)
        self._scanned = self._persisted = end
        if stones:
            self.log.info("sovereignty.tombstones_queued", genes=len(forgotten),
                          tombstones=len(stones))
        return len(stones)


# The kind field of a forget record as its canonical (msgpack) bytes hold it.
# A record without these bytes cannot be one, so it is not decoded: after a cold sync
# the scan passes ~100k `received` records, and decoding each was ~3 % of the
# receiving daemon's time (issue 15). A record that has them is decoded and judged.
_FORGET_BYTES: Final = canonical.encode_plain("kind") + canonical.encode_plain(AuditKind.FORGET)


def _local_forgets(txn: Any, audit: AuditLog, start: int) -> tuple[list[str], int]:
    """Gene ids of local `forget` records (no peer: not a tombstone we honoured) at audit
    index >= start, and the index after the last record."""
    cur = txn.cursor(db=audit.db)
    end = start
    forgotten: list[str] = []
    if not cur.set_range(_U64.pack(start)):
        return forgotten, end
    for key, raw in cur:
        end = _U64.unpack(key)[0] + 1
        if _FORGET_BYTES not in raw:
            continue
        with contextlib.suppress(DecodeError, KeyError, TypeError):
            body = canonical.decode(raw)["body"]
            if body["kind"] == AuditKind.FORGET and not body["peer"]:
                forgotten.append(body["gene_id"])
    return forgotten, end
