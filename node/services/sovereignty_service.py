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
at once: every audit append wakes it (`audit_signal`, from whatever thread wrote), and
so does the `policy_changed` control method; nothing polls the log's size (ADR 0022).

The rooms: the frames and tombstones are `gd.protocol.agreement_messages`; the views
`sovereignty_views`, the delivery conversation `sovereignty_delivery`, the tombstone
outbox `sovereignty_forget`. This module wires them and decides *when* to deliver.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Final

import trio
from libp2p.custom_types import TProtocol

from gd.genome.errors import ValidationError
from gd.node.app.adaptation import AdaptationDesk
from gd.node.net.streams import StreamGone
from gd.node.services.recorder import LedgerRecorder, Route
from gd.node.services.sovereignty_delivery import AgreementDelivery, Delivered
from gd.node.services.sovereignty_forget import ForgetOutbox
from gd.node.services.sovereignty_repair import RepairItemCache
from gd.node.services.sovereignty_views import SovereignReceiverView, SovereignSenderView
from gd.node.services.sync_service import SyncService
from gd.node.store import audit_signal
from gd.node.store.audit import AuditLog, LedgerSink
from gd.node.store.policy_store import PolicyStore
from gd.protocol.agreement_messages import (
    AGREEMENTS_PROTOCOL_ID as AGREEMENTS_ID,
)
from gd.protocol.agreement_messages import DeliveryAck, ForgetDelivery, ProposalDelivery
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.policy_rules import PeerInfo
from gd.protocol.sovereignty_anonymise import anonymisation_secret
from gd.protocol.sync_frames import RECONCILE_PROTOCOL_ID

if TYPE_CHECKING:
    from gd.node.net.gate import Gate, PeerChange

AGREEMENTS_PROTOCOL_ID: Final = TProtocol(AGREEMENTS_ID)


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


# ---- the service ---------------------------------------------------------------------


class SovereigntyService:
    """Agreements, enforcement, audit and tombstones for one daemon. Registers its
    protocol, control method and (unless share-all testing) the sync views on
    construction; `run()` watches peers and the audit log until cancelled."""

    def __init__(self, gate: Gate, cortex: Any, sync: SyncService, *,
                 ledger_route: Route | None = None) -> None:
        self.gate = gate
        self.sync = sync
        self.cortex = cortex
        self.key = gate.key
        self.log = gate.log.bind(component="sovereignty")
        self.audit = AuditLog(self.cortex, clock=gate.clock)
        self.store = PolicyStore(self.cortex, self.key, org=gate.cfg.org,
                                 region=gate.cfg.region, audit=self.audit)
        # Approvals and agreements recorded inside the daemon go through the ledger
        # service (`ledger_route`, handed over by the daemon), never our own control socket.
        self.recorder = LedgerRecorder(self.cortex.env, self.key, route=ledger_route,
                                       clock=gate.clock)
        self.ledger: LedgerSink = _SerialLedger(self.recorder)
        self.desk = AdaptationDesk(self.cortex, self.key, self.ledger, self.audit)
        self.secret = anonymisation_secret(self.key)
        self.forget = ForgetOutbox(self.cortex, self.audit, self.key, self.log)
        self.repair_items = RepairItemCache(self.cortex)  # per-peer repair items
        self.delivery = AgreementDelivery(self)
        self._changed = trio.Event()
        self._audit_grew = True  # set on every audit append (and policy_changed)
        self._wake_lock = threading.Lock()
        self._wake_pending = False  # an audit append's wake-up is scheduled, not run
        self.enforcing = not sync.policy_injected
        if self.enforcing:
            sync.set_view_factories(self.sender_view, self.receiver_view)
        gate.register_protocol(AGREEMENTS_PROTOCOL_ID, self.delivery.serve)
        gate.methods.add("policy_changed", self._control_policy_changed)
        gate.on_peer(self._peer_changed)  # each new peer is met (and delivered to) at once

    # -- views -------------------------------------------------------------------------

    def peer_info(self, peer_id: str) -> PeerInfo:
        """The peer's *certified* org and region: what an org key we trust vouched for in
        its handshake. Self-asserted claims (`rec.org`, `rec.region`) never get here;
        uncertified ones stay empty, which matches no org or region rule."""
        rec = self.gate.table.get(peer_id)
        try:
            return PeerInfo(peer_id, (rec.certified_org or "") if rec else "",
                            (rec.certified_region or "") if rec else "")
        except ValidationError:
            return PeerInfo(peer_id)

    def sender_view(self, peer: str) -> SovereignSenderView:
        return SovereignSenderView(self, self.peer_info(peer))

    def receiver_view(self, peer: str) -> SovereignReceiverView:
        return SovereignReceiverView(self, self.peer_info(peer))

    # -- the conversations (sovereignty_delivery, sovereignty_forget) -----------------

    async def deliver(self, peer: str) -> Delivered:
        """Send `peer` its outbox (proposals, then tombstones) until acknowledged."""
        return await self.delivery.deliver(peer)

    def take_proposals(self, peer: str, msg: ProposalDelivery) -> DeliveryAck:
        """Worker thread: apply a peer's proposals; a bad one is refused on its own."""
        return self.delivery.take_proposals(peer, msg)

    def take_tombstones(self, peer: str, msg: ForgetDelivery) -> DeliveryAck:
        """Worker thread: an honest receiver deletes the signer's genes it names."""
        return self.delivery.take_tombstones(peer, msg)

    def queue_tombstones(self) -> int:
        """Worker thread: queue tombstones for local forgets not seen yet."""
        return self.forget.queue_tombstones()

    def effective_with(self, peer: str) -> bool:
        """Is any agreement with `peer` in force on our side?"""
        return any(a.peer == peer and a.flows for a in self.store.agreements())

    # -- triggers ----------------------------------------------------------------------

    def policy_changed(self) -> None:
        """Deliver outboxes and queue tombstones now (the trio thread only)."""
        self._audit_grew = True
        self._changed.set()

    async def _control_policy_changed(self) -> dict[str, Any]:
        self.policy_changed()
        return {"ok": True}

    async def run(self) -> None:
        """Meet new peers and follow the audit log until cancelled with the daemon."""
        token = trio.lowlevel.current_trio_token()

        def appended() -> None:  # in the writer's thread, inside its transaction
            # One wake-up until it has run: a sync batch appends one record per gene,
            # and each wake-up costs the trio loop a socket write (issue 15).
            with self._wake_lock:
                if self._wake_pending:
                    return
                self._wake_pending = True
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self.policy_changed)

        stop = audit_signal.listen(self.cortex, appended)
        try:
            await self.watch_audit_log()
        finally:
            stop()

    async def watch_audit_log(self) -> None:
        """When the audit log grew (`policy_changed`, called on every append), queue
        tombstones for new forgets and deliver every connected peer's outbox. New peers
        are not looked for: the gate tells us of each (`_peer_changed`)."""
        self._audit_grew = True  # the first round catches up on what came before us
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            # Appends from now on wake us again; those before are in transactions that
            # `settled_len` below waits for (so a whole batch's records wake us once).
            with self._wake_lock:
                self._wake_pending = False
            if not self._audit_grew:
                continue
            self._audit_grew = False
            # Woken inside the appender's transaction: wait for its commit, then read.
            await trio.to_thread.run_sync(self.audit.settled_len)
            await trio.to_thread.run_sync(self.queue_tombstones)
            for rec in self.gate.table.connected():
                self.gate.spawn(rec.peer_id, self._deliver_guarded, rec.peer_id)

    def _peer_changed(self, change: PeerChange) -> None:
        """A peer handshook (every connection is a new meeting): meet it in its lifetime."""
        if change.up:
            self.gate.spawn(change.peer_id, self._meet, change.peer_id)

    async def _meet(self, peer_id: str) -> None:
        async def meet() -> None:
            info = self.peer_info(peer_id)
            proposed = await trio.to_thread.run_sync(self.store.set_peer, info)
            self.log.info("sovereignty.peer", peer=peer_id, org=info.org,
                          region=info.region, proposed=proposed)
            await self.deliver(peer_id)

        await self.guard_delivery(peer_id, meet())

    async def _deliver_guarded(self, peer_id: str) -> None:
        await self.guard_delivery(peer_id, self.deliver(peer_id))

    async def guard_delivery(self, peer: str, work: Awaitable[Any]) -> None:
        """A failed delivery is logged (and scored when it is the peer's fault: the one
        place sovereignty turns a `RemoteProtocolError` into a score); the outbox keeps
        what was not acknowledged, so the next trigger retries."""
        try:
            await work
        except RemoteProtocolError as exc:
            await self.gate.misbehaved(peer, AGREEMENTS_PROTOCOL_ID, exc)
        except (StreamGone, trio.TooSlowError) as exc:
            self.log.info("sovereignty.interrupted", peer=peer, error=repr(exc)[:200])
        except Exception as exc:  # a local failure must not take the daemon down
            self.log.error("sovereignty.failed", peer=peer, error=repr(exc)[:300])

    def backfill(self, peer: str) -> None:
        """One anti-entropy round with `peer` (module docstring: why not a checkpoint
        reset): right after the peer loop's next pull, which brings the genes after our
        checkpoint (`SyncService.repair_after_pull`), or, with no loop for the peer, at
        once in the background (the caller is answering a stream)."""
        if self.sync.repair_after_pull(peer):
            return

        async def round_() -> None:
            await self.sync.guard_round(peer, RECONCILE_PROTOCOL_ID, self.sync.reconcile(peer))

        self.gate.spawn(peer, round_)  # in the peer's lifetime: it ends if the peer goes
