"""Sovereignty in the running daemon: agreements over the wire, enforcement in sync, the
audit trail of every gene in or out, and tombstones for the right to deletion (issue 7).

The decisions are made elsewhere: `gd.protocol.sovereignty` (pure rules and filters) and
`gd.node.store.policy_store` (rules, agreements, outbox in the Cortex). This service carries
them between daemons and plugs them into `gd.node.services.sync_service`:

* **Peers.** A peer that passes the handshake is recorded with its *certified* org and
  region (`PolicyStore.set_peer`), which proposes our rules that now match it. A claim no
  org key we trust certified is recorded as no org and no region: `org:`/`region:` rules
  never match it, a rule naming its peer id still does (docs/adr/0008).
* **Agreements** (`/gd/agreements/1.0.0`). Each peer's outbox of signed proposals
  (`PolicyStore.outbox`) is delivered on connect and whenever the policy changes; the
  receiver applies each one (`receive_proposal`, recorded on the ledger when it makes an
  agreement effective) and acknowledges, and only then does the sender drop them
  (`delivered`), so a lost connection re-delivers (harmless: applying a proposal twice
  changes nothing). A revocation received marks the origin's genes of that domain
  `revoked` (`AdaptationDesk.mark_revoked`).
* **Backfill.** A gene stored before an agreement became effective is behind the peer's
  checkpoint in our feed, so the feed alone would never send it. When a delivery makes an
  agreement effective, both sides run one anti-entropy round with the other
  (`SyncService.reconcile`): it fetches exactly the heads the new agreement lets through
  and nothing already held, in O(log n) round trips (docs/sovereignty.md, "Backfill").
* **Enforcement.** Always in the real binary (no config key turns it off; only a
  `share_policy` passed in-process to `SyncService`, by tests, does), sync serves each receiver
  through an `OutboundFilter` (it may send a derived, anonymised gene) and takes genes
  through an `InboundFilter`; after each batch the audit log gets one `gene_sent` or
  `gene_received`/`gene_refused` record per gene.
* **Right to deletion.** A local `genes forget` (CLI or daemon) appends a `forget` audit
  record; the service notices it, finds the peers the audit log says received the gene
  (or a gene derived from it) and queues each a `Tombstone` signed by us naming the ids
  that peer holds. An honest receiver deletes the genes of ours among them and audits it.

Changes made by the CLI beside a running daemon (share, revoke, forget) reach the service
by polling the audit log's size (every such change appends a record; one LMDB stat) or at
once through the `policy_changed` control method.
"""

from __future__ import annotations

import contextlib
import struct
import threading
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

import trio
from libp2p.custom_types import TProtocol

from gd.genome import canonical, checks
from gd.genome.errors import DecodeError, SignatureError, ValidationError
from gd.genome.gene import Gene, ShareScope
from gd.genome.identity import NodeKey, is_peer_id, verify
from gd.node.app.adaptation import AdaptationDesk
from gd.node.clock import hlc_now
from gd.node.net.host import to_id
from gd.node.net.peers import PeerRecord
from gd.node.net.streams import READ_TIMEOUT_S, FramedStream, StreamGone
from gd.node.services.recorder import LedgerRecorder
from gd.node.services.sync_service import RECONCILE_PROTOCOL_ID, SyncService
from gd.node.store.audit import AuditKind, AuditLog, LedgerSink
from gd.node.store.policy_store import PolicyStore
from gd.node.store.proposal_bounds import ProposalLimit
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.policy_rules import PeerInfo
from gd.protocol.sovereignty import (
    InboundFilter,
    OutboundFilter,
    PolicySet,
    SentGene,
    ShareDecision,
)
from gd.protocol.sovereignty_agreements import ProposalError, ProposalKind, ProposalOutcome
from gd.protocol.sovereignty_anonymise import anonymisation_secret, derive_for
from gd.protocol.sync import RejectedGene
from gd.protocol.wire import Message, message

if TYPE_CHECKING:
    from gd.node.daemon import Daemon

AGREEMENTS_PROTOCOL_ID: Final = TProtocol("/gd/agreements/1.0.0")
# The watcher looks for new peers and a grown audit log this often: a set comparison and
# one LMDB stat, so a CLI `share` reaches the peer within half a second without a call.
WATCH_TICK_S: Final = 0.5
# Opening a stream is ~9 ms on loopback; a peer that cannot open one in this long is gone.
OPEN_TIMEOUT_S: Final = 10.0
# Proposals per frame: each is at most MAX_PROPOSAL_BYTES (4 KiB), so 64 stay far below
# the 4 MiB frame limit; a longer outbox goes in several frames.
MAX_PROPOSALS_PER_FRAME: Final = 64
# Gene ids per tombstone: 1024 ids of at most 128 characters stay under 140 KiB signed;
# forgetting more genes at once makes several tombstones.
MAX_TOMBSTONE_IDS: Final = 1024
MAX_TOMBSTONE_BYTES: Final = 160 * 1024
MAX_TOMBSTONES_PER_FRAME: Final = 16
TOMBSTONE_TAG: Final = b"gd-forget-tombstone/1\x00"
FORGET_OUTBOX_DB: Final = "sov_forget_outbox"
SERVICE_META_DB: Final = "sov_service_meta"
_AUDIT_SCANNED: Final = b"audit_scanned"
# How far the forget scan may run ahead of its stored position: a restart re-reads at most
# this many audit records (milliseconds), and no write is spent on a scan that found none.
SCAN_PERSIST_EVERY: Final = 4096
_SEP: Final = b"\x00"
_U64 = struct.Struct(">Q")
_TOMBSTONE_FIELDS: Final = {"hlc", "ids", "origin", "peer", "sig"}


class TombstoneError(RemoteProtocolError):
    """A peer's tombstone is malformed, mis-addressed or not signed by the gene's origin."""


@dataclass(frozen=True, slots=True)
class Tombstone:
    """"Delete these genes of mine": signed by `origin`, addressed to `peer`.

    `gene_ids` are the ids as the peer holds them (for an anonymised share, the derived
    ids). A receiver deletes only genes whose origin is the signer: no one can make a
    peer forget genes that are not theirs."""

    origin: str
    peer: str
    gene_ids: tuple[str, ...]
    hlc: int
    signature: bytes = b""

    def __post_init__(self) -> None:
        for name in ("origin", "peer"):
            if not is_peer_id(getattr(self, name)):
                raise ValidationError(name, f"{getattr(self, name)!r} is not a peer id")
        if not isinstance(self.gene_ids, tuple) or not 1 <= len(self.gene_ids) \
                <= MAX_TOMBSTONE_IDS:
            raise ValidationError("ids", f"1..{MAX_TOMBSTONE_IDS} gene ids")
        for gene_id in self.gene_ids:
            checks.ident("ids", gene_id)
        checks.uint("hlc", self.hlc)
        if not isinstance(self.signature, bytes) or len(self.signature) not in (0, 64):
            raise ValidationError("sig", "expected 64 bytes")

    def _plain(self) -> dict[str, Any]:
        return {"hlc": self.hlc, "ids": list(self.gene_ids), "origin": self.origin,
                "peer": self.peer}

    @property
    def signing_bytes(self) -> bytes:
        return TOMBSTONE_TAG + canonical.encode(self._plain())

    @classmethod
    def create(cls, key: NodeKey, peer: str, gene_ids: Sequence[str], hlc: int) -> Tombstone:
        unsigned = cls(key.peer_id, peer, tuple(gene_ids), hlc)
        return replace(unsigned, signature=key.sign(unsigned.signing_bytes))

    def encode(self) -> bytes:
        plain = self._plain()
        plain["sig"] = self.signature
        return canonical.encode(plain)

    @classmethod
    def decode(cls, data: bytes) -> Tombstone:
        """Strictly decode and verify; `TombstoneError` if anything is off."""
        if not isinstance(data, bytes) or len(data) > MAX_TOMBSTONE_BYTES:
            raise TombstoneError(f"a tombstone is bytes of at most {MAX_TOMBSTONE_BYTES}")
        try:
            plain = checks.require_map("tombstone", canonical.decode(data))
            if set(plain) != _TOMBSTONE_FIELDS:
                raise ValidationError("tombstone", f"fields must be {sorted(_TOMBSTONE_FIELDS)}")
            ids = plain["ids"]
            if not isinstance(ids, list):
                raise ValidationError("ids", "expected a list")
            stone = cls(plain["origin"], plain["peer"], tuple(ids), plain["hlc"], plain["sig"])
        except (DecodeError, ValidationError, TypeError, ValueError) as exc:
            raise TombstoneError(f"malformed tombstone: {exc}") from None
        if stone.encode() != data:
            raise TombstoneError("tombstone bytes are not canonical")
        try:
            verify(stone.origin, stone.signing_bytes, stone.signature)
        except SignatureError as exc:
            raise TombstoneError(f"tombstone not signed by {stone.origin}: {exc}") from None
        return stone


# ---- wire messages -------------------------------------------------------------------


@message
@dataclass(frozen=True)
class ProposalDelivery(Message):
    """Sender -> peer: signed `Proposal` bytes from our outbox for it, oldest first;
    `upto` is the outbox sequence of the last one (what the ack confirms)."""

    TYPE = "gd.agreements.proposals"
    proposals: tuple[bytes, ...]
    upto: int

    def __post_init__(self) -> None:
        if not 1 <= len(self.proposals) <= MAX_PROPOSALS_PER_FRAME:
            raise ValueError(f"1..{MAX_PROPOSALS_PER_FRAME} proposals per frame")


@message
@dataclass(frozen=True)
class ForgetDelivery(Message):
    """Origin -> peer: signed tombstones (the `forget` kind of this protocol)."""

    TYPE = "gd.agreements.forget"
    tombstones: tuple[bytes, ...]
    upto: int

    def __post_init__(self) -> None:
        if not 1 <= len(self.tombstones) <= MAX_TOMBSTONES_PER_FRAME:
            raise ValueError(f"1..{MAX_TOMBSTONES_PER_FRAME} tombstones per frame")


@message
@dataclass(frozen=True)
class DeliveryAck(Message):
    """Peer -> sender: everything up to `upto` is applied (or refused, counted in
    `refused`: refused items are never re-sent). `effective`: a proposal made (or kept)
    an agreement in force, so the sender backfills too. `deleted`: genes a tombstone
    removed."""

    TYPE = "gd.agreements.ack"
    upto: int
    effective: bool = False
    refused: int = 0
    deleted: int = 0


# ---- per-peer sync views -------------------------------------------------------------


class SovereignSenderView:
    """`SenderView` for one receiver: `OutboundFilter` for the feed, the same decision
    (on a policy snapshot) for reconciliation items and fetches; writes `gene_sent`
    records once a batch has gone out."""

    def __init__(self, service: SovereigntyService, receiver: PeerInfo) -> None:
        self.receiver = receiver
        self._service = service
        self._filter = OutboundFilter(service.store.policies, receiver, service.key,
                                      service.secret, service.sync.read_feed)
        self._snapshot: PolicySet | None = None
        self._cleared: dict[bytes, SentGene] = {}

    def read_feed(self, since: int, limit: int) -> Any:
        return self._filter.read_feed(since, limit)

    def policy(self, receiver: str, gene: Gene) -> bool:
        return self._filter.policy(receiver, gene)

    def outgoing(self, gene: Gene) -> Gene | None:
        if self._snapshot is None:  # one policy read per conversation, not per gene
            self._snapshot = self._service.store.policies()
        r = self.receiver
        decision = self._snapshot.allowed_to_send(gene, r.peer_id, r.org, r.region)
        if not decision.allowed:
            return None
        out = gene
        if decision.anonymize or decision.scope != gene.scope:
            svc = self._service
            out = derive_for(gene, r.peer_id, svc.key, svc.secret,
                             anonymize=decision.anonymize, scope=decision.scope or ShareScope())
        self._cleared[out.version_hash] = SentGene(gene, out, decision)
        return out

    def finish_batch(self, extra: Sequence[Gene] = ()) -> int:
        sent = self._filter.take_sent()
        sent += [self._cleared[g.version_hash] for g in extra
                 if g.version_hash in self._cleared]
        self._cleared.clear()
        return self._service.audit.record_sent(self.receiver.peer_id, sent)


class SovereignReceiverView:
    """`ReceiverView` for one sender: `InboundFilter` on a policy snapshot taken once per
    batch; writes `gene_received` / `gene_refused` records after the batch applies."""

    def __init__(self, service: SovereigntyService, sender: PeerInfo) -> None:
        self.sender = sender
        self._service = service
        self._snapshot: PolicySet | None = None
        self._filter = InboundFilter(self._policies, sender)

    def _policies(self) -> PolicySet:
        if self._snapshot is None:
            self._snapshot = self._service.store.policies()
        return self._snapshot

    def accept(self, gene: Gene) -> bool:
        return self._filter.accept(gene)

    def finish_batch(self, refused_on_apply: Sequence[RejectedGene] = ()) -> int:
        """Audit the batch: what the store refused after our filter accepted it is
        recorded as refused, with the store's reason (never as received)."""
        why = {r.gene_id: r.reason for r in refused_on_apply}
        accepted: list[tuple[Gene, ShareDecision]] = []
        refused: list[tuple[Gene, ShareDecision]] = self._filter.refused
        for gene, decision in self._filter.accepted:
            if gene.id in why:
                refused.append((gene, replace(
                    decision, allowed=False, reason=why[gene.id],
                    steps=(*decision.steps, f"refused by the store: {why[gene.id]}"))))
            else:
                accepted.append((gene, decision))
        self._filter.accepted, self._filter.refused = [], []
        self._snapshot = None  # the next batch sees a revocation made meanwhile
        return self._service.audit.record_received(self.sender.peer_id, accepted, refused)


class _SerialLedger:
    """The ledger recorder behind a lock: its clock is not safe to step from two worker
    threads at once (two peers' proposals may be applied concurrently)."""

    def __init__(self, recorder: LedgerRecorder) -> None:
        self.recorder = recorder
        self._lock = threading.Lock()

    def append(self, kind: str, payload_hash: bytes, summary: dict[str, Any],
               idempotency_key: str) -> object:
        with self._lock:  # the receipt: a CLI command through the daemon reports it
            return self.recorder.append(kind, payload_hash, summary, idempotency_key)


@dataclass
class _Delivered:
    proposals: int = 0
    tombstones: int = 0
    effective: bool = False


# ---- the service ---------------------------------------------------------------------


class SovereigntyService:
    """Agreements, enforcement, audit and tombstones for one daemon. Registers its
    protocol, control method and (unless share-all testing) the sync views on
    construction; `run()` watches peers and the audit log until cancelled."""

    def __init__(self, daemon: Daemon, sync: SyncService) -> None:
        self.daemon = daemon
        self.sync = sync
        self.cortex = daemon.cortex
        self.key = daemon.key
        self.log = daemon.log.bind(component="sovereignty")
        self.audit = AuditLog(self.cortex)
        self.store = PolicyStore(self.cortex, self.key, org=daemon.cfg.org,
                                 region=daemon.cfg.region, audit=self.audit)
        self.recorder = LedgerRecorder(self.cortex.env, self.key)
        self.ledger: LedgerSink = _SerialLedger(self.recorder)
        self.desk = AdaptationDesk(self.cortex, self.key, self.ledger, self.audit)
        self.secret = anonymisation_secret(self.key)
        self._forget_db = self.cortex.open_db(FORGET_OUTBOX_DB)
        self._meta_db = self.cortex.open_db(SERVICE_META_DB)
        # peer -> the start of the session we met it in (a reconnect is a new meeting)
        self._met: dict[str, float | None] = {}
        self._scanned: int | None = None  # audit index the forget scan has reached
        self._persisted = 0  # ... and the one stored in SERVICE_META_DB
        self._locks: dict[str, trio.Lock] = {}
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.enforcing = not sync.policy_injected
        if self.enforcing:
            sync.set_view_factories(self.sender_view, self.receiver_view)
        daemon.register_protocol(AGREEMENTS_PROTOCOL_ID, self.serve)
        daemon.methods.add("policy_changed", self._control_policy_changed)

    # -- views -------------------------------------------------------------------------

    def peer_info(self, peer_id: str) -> PeerInfo:
        """The peer's *certified* org and region: what an org key we trust vouched for in
        its handshake. Self-asserted claims (`rec.org`, `rec.region`) never get here;
        uncertified ones stay empty, which matches no org or region rule."""
        rec = self.daemon.table.get(peer_id)
        try:
            return PeerInfo(peer_id, (rec.certified_org or "") if rec else "",
                            (rec.certified_region or "") if rec else "")
        except ValidationError:
            return PeerInfo(peer_id)

    def sender_view(self, peer: str) -> SovereignSenderView:
        return SovereignSenderView(self, self.peer_info(peer))

    def receiver_view(self, peer: str) -> SovereignReceiverView:
        return SovereignReceiverView(self, self.peer_info(peer))

    # -- triggers ----------------------------------------------------------------------

    def policy_changed(self) -> None:
        """Deliver outboxes and queue tombstones now rather than at the next tick."""
        self._changed.set()

    async def _control_policy_changed(self) -> dict[str, Any]:
        self.policy_changed()
        return {"ok": True}

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            audit_size = -1
            while True:
                with trio.move_on_after(WATCH_TICK_S):
                    await self._changed.wait()
                self._changed = trio.Event()
                connected = {r.peer_id: r for r in self.daemon.table.connected()}
                self._met = {p: since for p, since in self._met.items() if p in connected}
                fresh = [r for p, r in connected.items()
                         if p not in self._met or self._met[p] != r.since]
                for rec in fresh:
                    self._met[rec.peer_id] = rec.since
                    nursery.start_soon(self._guarded, rec.peer_id, self._meet(rec))
                size = await trio.to_thread.run_sync(self.audit.__len__)
                if size == audit_size:
                    continue
                audit_size = size
                await trio.to_thread.run_sync(self.queue_tombstones)
                for peer in connected.keys() - {r.peer_id for r in fresh}:
                    nursery.start_soon(self._guarded, peer, self.deliver(peer))

    async def _meet(self, rec: PeerRecord) -> None:
        info = self.peer_info(rec.peer_id)
        proposed = await trio.to_thread.run_sync(self.store.set_peer, info)
        self.log.info("sovereignty.peer", peer=rec.peer_id, org=info.org, region=info.region,
                      proposed=proposed)
        await self.deliver(rec.peer_id)

    async def _guarded(self, peer: str, work: Awaitable[Any]) -> None:
        """A failed delivery is logged (and scored when it is the peer's fault); the
        outbox keeps what was not acknowledged, so the next trigger retries."""
        try:
            await work
        except RemoteProtocolError as exc:
            await self.daemon.misbehaved(peer, AGREEMENTS_PROTOCOL_ID, exc)
        except (StreamGone, trio.TooSlowError) as exc:
            self.log.info("sovereignty.interrupted", peer=peer, error=repr(exc)[:200])
        except Exception as exc:  # a local failure must not take the daemon down
            self.log.error("sovereignty.failed", peer=peer, error=repr(exc)[:300])

    def _backfill(self, peer: str) -> None:
        """One anti-entropy round with `peer` (module docstring: why not a checkpoint
        reset). Started in the background: the caller is answering a stream."""
        async def round_() -> None:
            await self.sync._guarded(peer, RECONCILE_PROTOCOL_ID, self.sync.reconcile(peer))

        if self._nursery is not None:
            self._nursery.start_soon(round_)

    # -- delivering (sender side) ------------------------------------------------------

    async def _open(self, peer: str) -> FramedStream:
        try:
            with trio.fail_after(OPEN_TIMEOUT_S):
                stream = await self.daemon.host.new_stream(to_id(peer), [AGREEMENTS_PROTOCOL_ID])
        except trio.TooSlowError:
            raise StreamGone(f"could not open {AGREEMENTS_PROTOCOL_ID} to {peer}") from None
        except Exception as exc:  # libp2p raises many kinds for "no connection"
            raise StreamGone(f"could not open {AGREEMENTS_PROTOCOL_ID} to {peer}: "
                             f"{exc!r}") from None
        metric = self.daemon.metrics.bytes

        def count(direction: str, n: int) -> None:
            metric.labels(protocol=AGREEMENTS_PROTOCOL_ID, direction=direction).inc(n)

        return FramedStream(stream, read_timeout_s=READ_TIMEOUT_S, count_bytes=count)

    async def deliver(self, peer: str) -> _Delivered:
        """Send `peer` its outbox (proposals, then tombstones) until acknowledged."""
        done = _Delivered()
        lock = self._locks.setdefault(peer, trio.Lock())
        async with lock:
            proposals = await trio.to_thread.run_sync(self.store.outbox, peer)
            tombstones = await trio.to_thread.run_sync(self.forget_outbox, peer)
            if not proposals and not tombstones:
                return done
            fs = await self._open(peer)
            try:
                for i in range(0, len(proposals), MAX_PROPOSALS_PER_FRAME):
                    chunk = proposals[i:i + MAX_PROPOSALS_PER_FRAME]
                    upto = chunk[-1][0]
                    ack = await self._request(fs, ProposalDelivery(
                        tuple(data for _, data in chunk), upto), upto)
                    await trio.to_thread.run_sync(self.store.delivered, peer, upto)
                    done.proposals += len(chunk)
                    done.effective |= ack.effective
                for i in range(0, len(tombstones), MAX_TOMBSTONES_PER_FRAME):
                    chunk = tombstones[i:i + MAX_TOMBSTONES_PER_FRAME]
                    upto = chunk[-1][0]
                    ack = await self._request(fs, ForgetDelivery(
                        tuple(data for _, data in chunk), upto), upto)
                    await trio.to_thread.run_sync(self.forget_delivered, peer, upto)
                    done.tombstones += len(chunk)
            finally:
                await fs.close()
        self.log.info("sovereignty.delivered", peer=peer, proposals=done.proposals,
                      tombstones=done.tombstones, effective=done.effective)
        # The peer backfills from us on its side; we backfill from it only once our side
        # is effective too (else its genes would be refused here: its proposal is still
        # on the way, and receiving it will start our backfill).
        if done.effective and await trio.to_thread.run_sync(self.effective_with, peer):
            self._backfill(peer)
        return done

    def effective_with(self, peer: str) -> bool:
        """Is any agreement with `peer` in force on our side?"""
        return any(a.peer == peer and a.flows for a in self.store.agreements())

    @staticmethod
    async def _request(fs: FramedStream, msg: Message, upto: int) -> DeliveryAck:
        reply = await fs.request(msg)
        if not isinstance(reply, DeliveryAck) or reply.upto != upto:
            raise RemoteProtocolError(f"expected gd.agreements.ack up to {upto}")
        return reply

    # -- receiving ---------------------------------------------------------------------

    async def serve(self, fs: FramedStream, rec: PeerRecord) -> None:
        """Inbound /gd/agreements: proposals and tombstones, each acknowledged."""
        peer = rec.peer_id
        while True:
            msg = await fs.receive()  # StreamGone when the sender is done
            if isinstance(msg, ProposalDelivery):
                ack = await trio.to_thread.run_sync(self.take_proposals, peer, msg)
                await fs.send(ack)
                if ack.effective:
                    self._backfill(peer)
            elif isinstance(msg, ForgetDelivery):
                ack = await trio.to_thread.run_sync(self.take_tombstones, peer, msg)
                await fs.send(ack)
            else:
                raise RemoteProtocolError(f"unexpected {msg.TYPE} on {AGREEMENTS_PROTOCOL_ID}")

    def take_proposals(self, peer: str, msg: ProposalDelivery) -> DeliveryAck:
        """Worker thread: apply a peer's proposals; a bad one is refused on its own."""
        refused = 0
        effective = False
        for data in msg.proposals:
            try:
                outcome: ProposalOutcome = self.store.receive_proposal(
                    data, peer, ledger=self.ledger)
            except ProposalLimit:
                raise  # past a bound on what a peer may store: the stream guard drops it
            except ProposalError as exc:
                refused += 1
                self.log.warning("sovereignty.proposal_refused", peer=peer, error=exc.message)
                continue
            if outcome.revoked_domain is not None:
                revoked = self.desk.mark_revoked(peer, outcome.revoked_domain)
                self.log.info("sovereignty.revocation_honoured", peer=peer,
                              domain=outcome.revoked_domain, genes=len(revoked))
            elif outcome.proposal.kind is ProposalKind.SHARE and outcome.agreement.flows:
                effective = True
        return DeliveryAck(upto=msg.upto, effective=effective, refused=refused)

    def take_tombstones(self, peer: str, msg: ForgetDelivery) -> DeliveryAck:
        """Worker thread: an honest receiver deletes the signer's genes it names."""
        refused = deleted = 0
        for data in msg.tombstones:
            try:
                stone = Tombstone.decode(data)
                if stone.origin != peer or stone.peer != self.key.peer_id:
                    raise TombstoneError(f"tombstone from {stone.origin} to {stone.peer} "
                                         f"arrived from {peer}")
            except TombstoneError as exc:
                refused += 1
                self.log.warning("sovereignty.tombstone_refused", peer=peer, error=exc.message)
                continue
            deleted += self._forget_theirs(stone)
        return DeliveryAck(upto=msg.upto, refused=refused, deleted=deleted)

    def _forget_theirs(self, stone: Tombstone) -> int:
        deleted = 0
        for gene_id in stone.gene_ids:
            gene = self.cortex.get_gene(gene_id)
            if gene is None or gene.origin != stone.origin:
                continue  # not held, or not the signer's to delete
            self.cortex.delete_gene(gene_id)
            self.audit.append(AuditKind.FORGET, peer=stone.origin, gene_id=gene_id,
                              version_hash=gene.version_hash, direction="in",
                              detail={"event": "tombstone_honoured", "hlc": stone.hlc})
            deleted += 1
        if deleted:
            self.log.info("sovereignty.forgotten", origin=stone.origin, genes=deleted)
        return deleted

    # -- tombstones (sender side) ------------------------------------------------------

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
        with contextlib.suppress(DecodeError, KeyError, TypeError):
            body = canonical.decode(raw)["body"]
            if body["kind"] == AuditKind.FORGET and not body["peer"]:
                forgotten.append(body["gene_id"])
    return forgotten, end
