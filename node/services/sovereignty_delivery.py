"""The agreements conversation (`/gd/agreements/1.0.0`) in the daemon: delivering a
peer's outbox, and applying what a peer delivers to us.

The rules (frames, chunking, the acknowledgement each frame is owed) live in
`gd.protocol.agreement_messages`; this module opens the stream, moves the frames, and
applies each delivery in a worker thread: proposals through `PolicyStore`
(`receive_proposal`, recorded on the ledger when it makes an agreement effective; a
revocation marks the origin's genes of that domain `revoked`), tombstones by deleting
the signer's genes they name. Only after the ack does the sender drop the items from its
outbox, so a lost connection re-delivers (harmless: applying twice changes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import trio

from gd.node.net.open_stream import open_framed_stream
from gd.node.net.peers import PeerRecord
from gd.node.net.streams import FramedStream
from gd.node.store.audit import AuditKind
from gd.node.store.policy_store import ProposalOutcome
from gd.node.store.proposal_bounds import ProposalLimit
from gd.protocol.agreement_messages import (
    AGREEMENTS_PROTOCOL_ID,
    DeliveryAck,
    ForgetDelivery,
    ProposalDelivery,
    Tombstone,
    TombstoneError,
    check_ack,
    delivery_frames,
    unexpected,
)
from gd.protocol.sovereignty_agreements import ProposalError, ProposalKind

if TYPE_CHECKING:
    from gd.genome.gene import Gene
    from gd.node.services.sovereignty_service import SovereigntyService

# Opening a stream is ~9 ms on loopback; a peer that cannot open one in this long is gone.
OPEN_TIMEOUT_S: Final = 10.0


@dataclass
class Delivered:
    """What one delivery to a peer got acknowledged."""

    proposals: int = 0
    tombstones: int = 0
    effective: bool = False


class AgreementDelivery:
    """Both sides of `/gd/agreements` for one `SovereigntyService`."""

    def __init__(self, service: SovereigntyService) -> None:
        self.svc = service
        self._locks: dict[str, trio.Lock] = {}

    async def _open(self, peer: str) -> FramedStream:
        gate = self.svc.gate
        metric = gate.metrics.bytes

        def count(direction: str, n: int) -> None:
            metric.labels(protocol=AGREEMENTS_PROTOCOL_ID, direction=direction).inc(n)

        return await open_framed_stream(gate.host, peer, AGREEMENTS_PROTOCOL_ID,
                                        timeout_s=OPEN_TIMEOUT_S, count_bytes=count)

    async def deliver(self, peer: str) -> Delivered:
        """Send `peer` its outbox (proposals, then tombstones) until acknowledged."""
        svc = self.svc
        done = Delivered()
        lock = self._locks.setdefault(peer, trio.Lock())
        async with lock:
            proposals = await trio.to_thread.run_sync(svc.store.outbox, peer)
            tombstones = await trio.to_thread.run_sync(svc.forget.forget_outbox, peer)
            frames = delivery_frames(proposals, tombstones)
            if not frames:
                return done
            fs = await self._open(peer)
            try:
                for frame in frames:
                    ack = check_ack(await fs.request(frame), frame)
                    if isinstance(frame, ProposalDelivery):
                        await trio.to_thread.run_sync(svc.store.delivered, peer, frame.upto)
                        done.proposals += len(frame.proposals)
                        done.effective |= ack.effective
                    else:
                        await trio.to_thread.run_sync(svc.forget.forget_delivered, peer,
                                                      frame.upto)
                        done.tombstones += len(frame.tombstones)
            finally:
                await fs.close()
        svc.log.info("sovereignty.delivered", peer=peer, proposals=done.proposals,
                     tombstones=done.tombstones, effective=done.effective)
        # The peer backfills from us on its side; we backfill from it only once our side
        # is effective too (else its genes would be refused here: its proposal is still
        # on the way, and receiving it will start our backfill).
        if done.effective and await trio.to_thread.run_sync(svc.effective_with, peer):
            svc.backfill(peer)
        return done

    async def serve(self, fs: FramedStream, rec: PeerRecord) -> None:
        """Inbound /gd/agreements: proposals and tombstones, each acknowledged."""
        peer = rec.peer_id
        while True:
            msg = await fs.receive()  # StreamGone when the sender is done
            if isinstance(msg, ProposalDelivery):
                ack = await trio.to_thread.run_sync(self.take_proposals, peer, msg)
                await fs.send(ack)
                if ack.effective:
                    self.svc.backfill(peer)
            elif isinstance(msg, ForgetDelivery):
                await fs.send(await trio.to_thread.run_sync(self.take_tombstones, peer, msg))
            else:
                raise unexpected(msg)

    def take_proposals(self, peer: str, msg: ProposalDelivery) -> DeliveryAck:
        """Worker thread: apply a peer's proposals; a bad one is refused on its own."""
        svc = self.svc
        refused = 0
        effective = False
        for data in msg.proposals:
            try:
                outcome: ProposalOutcome = svc.store.receive_proposal(
                    data, peer, ledger=svc.ledger)
            except ProposalLimit:
                raise  # past a bound on what a peer may store: the stream guard drops it
            except ProposalError as exc:
                refused += 1
                svc.log.warning("sovereignty.proposal_refused", peer=peer, error=exc.message)
                continue
            if outcome.revoked_domain is not None:
                revoked = svc.desk.mark_revoked(peer, outcome.revoked_domain)
                svc.repair_items.invalidate()  # `revoked` is set without a feed entry
                svc.log.info("sovereignty.revocation_honoured", peer=peer,
                             domain=outcome.revoked_domain, genes=len(revoked))
            elif outcome.proposal.kind is ProposalKind.SHARE and outcome.agreement.flows:
                effective = True
        return DeliveryAck(upto=msg.upto, effective=effective, refused=refused)

    def take_tombstones(self, peer: str, msg: ForgetDelivery) -> DeliveryAck:
        """Worker thread: an honest receiver deletes the signer's genes it names."""
        svc = self.svc
        refused = deleted = 0
        for data in msg.tombstones:
            try:
                stone = Tombstone.decode(data)
                if stone.origin != peer or stone.peer != svc.key.peer_id:
                    raise TombstoneError(f"tombstone from {stone.origin} to {stone.peer} "
                                         f"arrived from {peer}")
            except TombstoneError as exc:
                refused += 1
                svc.log.warning("sovereignty.tombstone_refused", peer=peer, error=exc.message)
                continue
            deleted += self._forget_theirs(stone)
        return DeliveryAck(upto=msg.upto, refused=refused, deleted=deleted)

    def _forget_theirs(self, stone: Tombstone) -> int:
        svc = self.svc
        deleted = 0
        for gene_id in stone.gene_ids:
            gene = svc.cortex.get_gene(gene_id)
            if gene is None or gene.origin != stone.origin:
                continue  # not held, or not the signer's to delete
            def audited(txn: Any, gone: Gene, stone: Tombstone = stone) -> object:
                return svc.audit.append_in(
                    txn, AuditKind.FORGET, peer=stone.origin, gene_id=gone.id,
                    version_hash=gone.version_hash, direction="in",
                    detail={"event": "tombstone_honoured", "hlc": stone.hlc})

            # The deletion and its audit record commit together: nobody ever sees the
            # gene gone without the record of why.
            if svc.cortex.delete_gene(gene_id, also=audited) is not None:
                deleted += 1
        if deleted:
            svc.log.info("sovereignty.forgotten", origin=stone.origin, genes=deleted)
        return deleted
