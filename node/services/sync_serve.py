"""The sender's side of `/gd/sync` in the daemon: answering pulls and hints.

`gd.protocol.sync_round.answer_pull` builds each answer from the feed through the
receiver's `SenderView` (sovereignty decides what leaves, and in which form); this
module reads frames off the inbound stream, runs the answer in a worker thread, and
counts what went out. A hint ("my feed is at `head`, pull from me") wakes the peer's
pull loop, or with `wait` pulls at once and answers how it went (`sync now`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from gd.genome.gene import Gene
from gd.node.gc_tuning import batch_gc
from gd.node.net.peers import PeerRecord
from gd.node.net.streams import FramedStream
from gd.node.services.sync_state import PeerSyncState, RoundStats
from gd.node.services.sync_views import SenderView
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.sync import SharePolicy, SyncSender
from gd.protocol.sync_frames import SYNC_PROTOCOL_ID, SyncBatch, SyncHint, SyncPull, SyncPulled
from gd.protocol.sync_messages import MAX_SEQ
from gd.protocol.sync_round import answer_pull
from gd.protocol.wire import HEADER_SIZE, Message, encode_body

if TYPE_CHECKING:
    from gd.node.services.sync_service import SyncService


def frame_len(msg: Message) -> int:
    """Bytes `msg` takes on the wire (length prefix and body)."""
    return HEADER_SIZE + len(encode_body(msg))


def feed_policy(view: SenderView) -> SharePolicy:
    """The view's policy with echo suppression: the receiver authored this version, so
    it has it (or lost it in a restore, which anti-entropy repairs: items and fetches
    skip this)."""
    def policy(receiver: str, gene: Gene) -> bool:
        return gene.author != receiver and view.policy(receiver, gene)

    return policy


def answer_batch(sender: SyncSender, pull: SyncPull, head: Callable[[], int],
                 compress: bool) -> tuple[SyncBatch, int, int]:
    """`answer_pull` with the collector out of the way (`batch_gc`): reading a batch off
    the feed decodes every gene into short-lived acyclic objects, and at the default
    threshold their young collections were ~1/5 of the sender's CPU (issue 15)."""
    with batch_gc():
        return answer_pull(sender, pull, head, compress)


class FeedServer:
    """Serves inbound `/gd/sync` streams for one `SyncService`."""

    def __init__(self, service: SyncService) -> None:
        self.svc = service

    async def serve_sync(self, fs: FramedStream, rec: PeerRecord) -> None:
        """Inbound /gd/sync: a pull conversation, or a hint."""
        svc = self.svc
        peer = rec.peer_id
        st = svc.state(peer)
        msg = await fs.receive()
        if isinstance(msg, SyncHint):
            await self._on_hint(fs, peer, st, msg)
            return
        view = svc.sender_view(peer)
        sender = SyncSender(peer, view.read_feed, feed_policy(view))
        compress = svc.settings.compress

        def head() -> int:
            return svc.cortex.last_seq

        st.pulls_open += 1  # a repair round with the peer waits meanwhile (`hold_repair`)
        try:
            while True:
                if not isinstance(msg, SyncPull):
                    raise RemoteProtocolError(f"expected gd.sync.pull, got {msg.TYPE}")
                reply, n, payload = await trio.to_thread.run_sync(
                    answer_batch, sender, msg, head, compress)
                if n:  # audited before the batch goes: a crash after the send must not
                    # lose the `gene_sent` records (forgetting a gene finds its holders)
                    await trio.to_thread.run_sync(view.finish_batch)
                await fs.send(reply)
                self._count(st, reply, n, payload)
                behind = reply.more or reply.upto < reply.head
                st.served_behind_at = trio.current_time() if behind else None
                msg = await fs.receive()  # StreamGone when the puller is done
        finally:
            st.pulls_open -= 1

    def _count(self, st: PeerSyncState, reply: SyncBatch, n: int, payload: int) -> None:
        metrics = self.svc.metrics
        wire = frame_len(reply)
        st.served.genes += n
        st.served.payload += payload
        st.served.wire += wire
        metrics.sync_genes.labels(direction="out").inc(n)
        metrics.sync_bytes.labels(direction="out", kind="payload").inc(payload)
        metrics.sync_bytes.labels(direction="out", kind="wire").inc(wire)

    async def _on_hint(self, fs: FramedStream, peer: str, st: PeerSyncState,
                       hint: SyncHint) -> None:
        svc = self.svc
        st.head = max(st.head, min(hint.head, MAX_SEQ))
        svc.set_lag(peer, st)
        if not hint.wait:
            if svc.settings.auto:
                st.wake.set()
            return
        stats = RoundStats(peer)
        await svc.guard_round(peer, SYNC_PROTOCOL_ID, svc.pull(peer, stats), stats.errors)
        await fs.send(SyncPulled(genes=stats.genes_in, conflicts=stats.conflicts,
                                 rejected=stats.rejected, error="; ".join(stats.errors)[:500]))
