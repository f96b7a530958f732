"""Anti-entropy repair (`/gd/reconcile`) in the daemon: the driver of `RepairRound`.

`gd.protocol.repair` holds the rules (which items each side names, what a fetch may ask
and what its answer may hold); this module reads the Cortex for them in worker threads,
carries the frames, applies fetched versions through the sync store and counts them.
Only the initiator learns the differences; it tells the responder how many versions
the responder lacks, so that side can start a round of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

import trio

from gd.node.gc_tuning import batch_gc
from gd.node.net.peers import PeerRecord
from gd.node.net.streams import FramedStream
from gd.node.services.repair_fetch import fetch_all
from gd.node.services.sync_state import RoundStats
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.reconcile import ItemSet, Reconciler
from gd.protocol.reconcile_messages import Item
from gd.protocol.repair import (
    RepairRound,
    answer_step,
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

    def items(self, peer: str) -> ItemSet | list[Item]:
        """Worker thread: the items of the heads `peer` may see (`items_for`); from the
        view's per-peer cache when it keeps one (sovereignty's `repair_items`: only
        genes changed since the last round are judged)."""
        view = self.svc.sender_view(peer)
        cached: Callable[[], ItemSet] | None = getattr(view, "repair_items", None)
        if cached is not None:
            return cached()
        return items_for(peer, self.svc.cortex.genes(), view.outgoing)

    def versions(self, peer: str, hashes: Sequence[bytes], zstd: bool) -> Versions:
        """Worker thread: the requested versions we hold and may share, as a frame (the
        view hears what went, via `finish_batch`)."""
        svc = self.svc
        view = svc.sender_view(peer)
        with batch_gc():  # reading and judging heads: short-lived genes (`sync_serve`)
            genes = versions_for(hashes, svc.cortex.get_by_version_hash,
                                 svc.cortex.get_gene, svc.cortex.genes, view.outgoing,
                                 getattr(view, "derived_source", None))
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
                # Pipelined, verified as they come, applied in groups (`repair_fetch`).
                round_.round_trips += await fetch_all(svc, fs, peer, round_.fetches(), stats)
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


