"""The receiver's side of `/gd/sync` in the daemon: the driver of `PullRound`.

`gd.protocol.sync_round.PullRound` decides every step of a pull (which request, when to
ask ahead, when the round ends, what is the peer's fault); this module carries its
frames over one stream, runs its CPU and LMDB work in worker threads, and keeps the
counters, metrics and logs. Pull-based, like CouchDB replication: a node only ever
*asks* for changes, so nothing arrives that the receiver did not request, and the
checkpoint lives with the receiver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from gd.genome.gene import Gene
from gd.node.gc_tuning import batch_gc
from gd.node.services.sync_group import AuditIn, GroupCommit, StagedBatch, commit_audited
from gd.node.services.sync_state import PeerSyncState, RoundStats
from gd.node.store.sync_store import ApplyStats
from gd.protocol.sync import SyncReceiver
from gd.protocol.sync_frames import SYNC_PROTOCOL_ID
from gd.protocol.sync_round import OpenedBatch, PullRound, PullStep
from gd.protocol.wire import Message

if TYPE_CHECKING:
    from gd.node.services.sync_service import SyncService


class LinkTimer:
    """How long each batch took on the link, for `PullRound`'s batch sizer: from its
    request going out to its reply being read, less the time we spent applying the
    previous batch meanwhile (a pipelined reply waits for us, not for the link)."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._now = monotonic
        self._sent = 0.0
        self._busy_since = 0.0
        self._busy = 0.0

    def sent(self) -> None:
        self._sent, self._busy = self._now(), 0.0

    def busy_from(self) -> None:
        self._busy_since = self._now()

    def busy_until(self) -> None:
        self._busy += self._now() - max(self._busy_since, self._sent)

    def arrived(self) -> float:
        return max(0.0, self._now() - self._sent - self._busy)


class FeedPuller:
    """Pulls peers' feeds for one `SyncService` (one round per peer at a time)."""

    def __init__(self, service: SyncService) -> None:
        self.svc = service

    async def pull(self, peer: str, stats: RoundStats | None = None) -> RoundStats:
        """Pull `peer`'s feed from our checkpoint until it has nothing more for us."""
        svc = self.svc
        stats = stats or RoundStats(peer)
        st = svc.state(peer)
        async with st.pull_lock:
            checkpoint = await trio.to_thread.run_sync(svc.cortex.get_checkpoint, peer)
            group = GroupCommit(svc.store, svc.gate.clock.monotonic)
            payload = 0

            def applier(sender: str, genes: Sequence[Gene], upto: int) -> None:
                group.stage(sender, genes, upto, payload)

            view = svc.receiver_view(peer)
            receiver = SyncReceiver(peer, applier, checkpoint=checkpoint,
                                    accept=view.accept, check=svc.verify_pool)
            round_ = PullRound(receiver, cap=svc.settings.batch_genes,
                               zstd=svc.settings.compress)

            def open_batch(reply: Message, link_s: float) -> OpenedBatch:
                with batch_gc():
                    return round_.open(reply, link_s)

            # Views that snapshot the policy are told where each batch starts: a group
            # holds several, each judged on the policy as it is when it arrives.
            begin_batch: Callable[[], None] | None = getattr(view, "begin_batch", None)

            def stage(opened: OpenedBatch) -> PullStep:
                if begin_batch is not None:
                    begin_batch()
                with batch_gc():
                    return round_.apply(opened)

            def commit() -> list[ApplyStats]:
                """The staged group and its audit records (the view judged every gene
                accepted since the last commit) in one transaction."""
                done: list[tuple[StagedBatch, ApplyStats]] = []

                def apply(audit: AuditIn | None) -> list[ApplyStats]:
                    done.extend(group.commit(audit))
                    return [s for _, s in done]

                applied = commit_audited(apply, view)
                if svc.on_received is not None:
                    for batch, _ in done:
                        svc.on_received(batch.sender, batch.genes)
                return applied

            fs = await svc.open_stream(peer, SYNC_PROTOCOL_ID, stats)
            link = LinkTimer(svc.gate.clock.monotonic)
            committing = False
            try:
                await fs.send(round_.start())
                link.sent()
                while not round_.done:
                    reply = await fs.receive()
                    opened = await trio.to_thread.run_sync(open_batch, reply,
                                                           link.arrived())
                    if opened.ahead is not None:
                        await fs.send(opened.ahead)
                        link.sent()
                    payload = opened.payload
                    link.busy_from()
                    step = await trio.to_thread.run_sync(stage, opened)
                    applied: list[ApplyStats] = []
                    if step.done or group.due():
                        committing = True
                        applied = await trio.to_thread.run_sync(commit)
                        committing = False
                        st.checkpoint = receiver.checkpoint
                    link.busy_until()
                    if any(a.applied for a in applied):
                        svc.notify_local_change()  # our feed grew: hint our other peers
                    st.head = opened.head
                    self._count_batch(stats, step, applied)
                    if step.rewound:
                        await self._feed_went_back(peer, st, opened.head)
                        break
                    svc.set_lag(peer, st)
                    if step.send is not None:
                        await fs.send(step.send)
                        link.sent()
            except BaseException:
                # The link failed or the round was cancelled with verified batches
                # staged: they are sound, so commit them (shielded: a cancelled round
                # still records what it checked) unless committing is what failed.
                if group.staged and not committing:
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(commit)
                    st.checkpoint = receiver.checkpoint
                raise
            finally:
                group.drop()
                await fs.close()
        svc.metrics.sync_rounds.labels(kind=SYNC_PROTOCOL_ID, outcome="ok").inc()
        return stats

    def _count_batch(self, stats: RoundStats, step: PullStep, applied: list[ApplyStats]
                     ) -> None:
        svc, outcome, payload = self.svc, step.outcome, step.opened.payload
        stats.batches += 1
        stats.payload_in += payload
        stats.rejected += len(outcome.rejected)
        for s in applied:
            stats.rejected += len(s.refused)
            svc.metrics.sync_rejected.inc(len(s.refused))
            for bad in s.refused:
                svc.log.warning("sync.refused", peer=stats.peer, gene=bad.gene_id,
                                reason=bad.reason)
            stats.genes_in += s.applied
            stats.conflicts += s.queued
            stats.ignored += s.ignored
            svc.metrics.sync_genes.labels(direction="in").inc(s.applied)
            svc.metrics.sync_conflicts.inc(s.queued)
        svc.metrics.sync_bytes.labels(direction="in", kind="payload").inc(payload)
        svc.metrics.sync_rejected.inc(len(outcome.rejected))
        for bad in outcome.rejected:
            svc.log.warning("sync.rejected", peer=stats.peer, gene=bad.gene_id,
                            reason=bad.reason)

    async def _feed_went_back(self, peer: str, st: PeerSyncState, head: int) -> None:
        """The peer's feed head is below our checkpoint: it was restored from a backup.
        Its new writes will reuse sequence numbers we think we have, so follow its head
        and let anti-entropy find what the gap hides."""
        svc = self.svc
        svc.log.warning("sync.feed_rewound", peer=peer, checkpoint=st.checkpoint, head=head)
        await trio.to_thread.run_sync(svc.cortex.set_checkpoint, peer, head)
        st.checkpoint, st.head, st.repair_due = head, head, True
        st.wake.set()
