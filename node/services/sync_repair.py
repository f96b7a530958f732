"""Anti-entropy repair (`/gd/reconcile`) in the daemon: the driver of `RepairRound`.

`gd.protocol.repair` holds the rules (which items each side names, what a fetch may ask
and what its answer may hold); this module reads the Cortex for them in worker threads,
carries the frames, applies fetched versions through the sync store and counts them.
Only the initiator learns the differences; it tells the responder how many versions
the responder lacks, so that side can start a round of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import trio

from gd.node.net.peers import PeerRecord
from gd.node.net.streams import FramedStream
from gd.node.services.sync_state import RoundStats
from gd.node.store.sync_store import ApplyStats
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.reconcile import Reconciler
from gd.protocol.reconcile_messages import Item
from gd.protocol.repair import (
    RepairRound,
    answer_step,
    check_versions,
    items_for,
    pack_versions,
    versions_for,
)
from gd.protocol.sync_frames import (
    RECONCILE_PROTOCOL_ID,
    FetchVersions,
    ReconcileEnd,
    ReconcileStep,
    Versions,
)

if TYPE_CHECKING:
    from gd.node.services.sync_service import SyncService

# The initiator of a repair waits this long for each reply: the responder builds its item
# set (every head the policy lets us see) on the first step and scans for derived forms
# on a fetch — O(n) work, ~15 s for 100k genes on a busy 2-core machine, far above the
# 10 s read timeout that suits the feed's small steps.
REPAIR_READ_TIMEOUT_S: Final = 180.0


class Repairer:
    """Both sides of anti-entropy repair for one `SyncService`."""

    def __init__(self, service: SyncService) -> None:
        self.svc = service

    def items(self, peer: str) -> list[Item]:
        """Worker thread: the items of the heads `peer` may see (`items_for`)."""
        view = self.svc.sender_view(peer)
        return items_for(peer, self.svc.cortex.genes(), view.outgoing)

    def versions(self, peer: str, hashes: Sequence[bytes], zstd: bool) -> Versions:
        """Worker thread: the requested versions we hold and may share, as a frame (the
        view hears what went, via `finish_batch`)."""
        svc = self.svc
        view = svc.sender_view(peer)
        genes = versions_for(hashes, svc.cortex.get_by_version_hash, svc.cortex.get_gene,
                             svc.cortex.genes, view.outgoing)
        view.finish_batch(genes)
        return pack_versions(genes, zstd and svc.settings.compress)

    async def reconcile(self, peer: str, stats: RoundStats | None = None) -> RoundStats:
        """Initiate one anti-entropy round with `peer`; fetch the versions we lack."""
        svc = self.svc
        stats = stats or RoundStats(peer)
        st = svc.state(peer)
        async with st.repair_lock:
            items = await trio.to_thread.run_sync(self.items, peer)
            round_ = await trio.to_thread.run_sync(
                lambda: RepairRound(items, zstd=svc.settings.compress))
            counted = RoundStats(peer)
            fs = await svc.open_stream(peer, RECONCILE_PROTOCOL_ID, counted,
                                       read_timeout_s=REPAIR_READ_TIMEOUT_S)
            try:
                step: ReconcileStep | None = round_.start()
                while step is not None:
                    step = round_.receive(await fs.request(step))
                for fetch in round_.fetches():
                    await self._fetch(fs, peer, fetch, stats)
                    round_.round_trips += 1
                await fs.send(round_.end())
            finally:
                await fs.close()
                stats.repair_wire += counted.wire_in + counted.wire_out
                stats.repair_round_trips += round_.round_trips
        svc.metrics.sync_rounds.labels(kind=RECONCILE_PROTOCOL_ID, outcome="ok").inc()
        svc.log.info("sync.reconciled", peer=peer, need=len(round_.need),
                     have=len(round_.have), round_trips=stats.repair_round_trips,
                     bytes=stats.repair_wire)
        return stats

    async def _fetch(self, fs: FramedStream, peer: str, fetch: FetchVersions,
                     stats: RoundStats) -> None:
        svc = self.svc
        reply = await fs.request(fetch)
        view = svc.receiver_view(peer)
        fetched = await trio.to_thread.run_sync(
            lambda: check_versions(reply, fetch.hashes, view.accept, check=svc.verify_pool))

        def apply() -> ApplyStats:
            applied = svc.store.apply_batch(peer, fetched.good, None)
            if svc.on_received is not None:
                svc.on_received(peer, fetched.good)
            view.finish_batch(applied.refused)
            return applied

        applied = await trio.to_thread.run_sync(apply)
        if applied.applied:
            svc.notify_local_change()  # our feed grew: hint our other peers
        refused = (*fetched.rejected, *applied.refused)
        stats.repaired += applied.applied
        stats.genes_in += applied.applied
        stats.conflicts += applied.queued
        stats.rejected += len(refused)
        stats.payload_in += fetched.payload
        svc.metrics.sync_genes.labels(direction="in").inc(applied.applied)
        svc.metrics.sync_conflicts.inc(applied.queued)
        svc.metrics.sync_rejected.inc(len(refused))
        for bad in refused:
            svc.log.warning("sync.rejected", peer=peer, gene=bad.gene_id, reason=bad.reason)

    async def serve_reconcile(self, fs: FramedStream, rec: PeerRecord) -> None:
        """Inbound /gd/reconcile: answer steps, serve fetches, note the end."""
        svc = self.svc
        peer = rec.peer_id
        responder: Reconciler | None = None
        while True:
            msg = await fs.receive()  # StreamGone when the initiator is done
            if isinstance(msg, ReconcileStep):
                if responder is None:
                    items = await trio.to_thread.run_sync(self.items, peer)
                    responder = await trio.to_thread.run_sync(Reconciler.responder, items)
                await fs.send(await trio.to_thread.run_sync(answer_step, responder, msg))
            elif isinstance(msg, FetchVersions):
                await fs.send(await trio.to_thread.run_sync(
                    self.versions, peer, msg.hashes, msg.zstd))
            elif isinstance(msg, ReconcileEnd):
                if msg.you_lack and svc.settings.auto:
                    st = svc.state(peer)
                    st.repair_due = True
                    st.wake.set()
            else:
                raise RemoteProtocolError(f"unexpected {msg.TYPE} on {RECONCILE_PROTOCOL_ID}")


