"""The receiver's side of `/gd/sync` in the daemon: the driver of `PullRound`.

`gd.protocol.sync_round.PullRound` decides every step of a pull (which request, when to
ask ahead, when the round ends, what is the peer's fault); this module carries its
frames over one stream, runs its CPU and LMDB work in worker threads, and keeps the
counters, metrics and logs. Pull-based, like CouchDB replication: a node only ever
*asks* for changes, so nothing arrives that the receiver did not request, and the
checkpoint lives with the receiver.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import trio

from gd.genome.gene import Gene
from gd.node.gc_tuning import batch_gc
from gd.node.services.sync_ahead import ThreadJob, check_job
from gd.node.services.sync_group import AuditIn, GroupCommit, StagedBatch, commit_audited
from gd.node.services.sync_state import PeerSyncState, RoundStats
from gd.node.store.sync_store import ApplyStats
from gd.protocol.sync import SyncReceiver, Verdict
from gd.protocol.sync_frames import SYNC_PROTOCOL_ID, SyncPull
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

            def stage(opened: OpenedBatch, checked: Sequence[Verdict]) -> PullStep:
                if begin_batch is not None:
                    begin_batch()
                with batch_gc():
                    return round_.apply(opened, checked)

            def commit() -> list[ApplyStats]:
                """The staged group and its audit records (the view judged every gene
                accepted since the last commit) in one transaction."""
                done: list[tuple[StagedBatch, ApplyStats]] = []

                def apply(audit: AuditIn | None) -> list[ApplyStats]:
                    done.extend(group.commit(audit))
                    return [s for _, s in done]

                applied = commit_audited(apply, view)
                if svc.on_received is not None:
                    for sender, genes in received_by_sender(b for b, _ in done):
                        svc.on_received(sender, genes)
                return applied

            fs = await svc.open_stream(peer, SYNC_PROTOCOL_ID, stats)
            link = LinkTimer(svc.gate.clock.monotonic)
            committing = False
            # Batches read and opened, their checks started, not staged yet (in order).
            ahead: deque[tuple[OpenedBatch, ThreadJob[Sequence[Verdict]]]] = deque()
            outstanding = False  # a request is out whose reply we have not read

            async def send(pull: SyncPull) -> None:
                nonlocal outstanding
                await fs.send(pull)
                link.sent()
                outstanding = True

            async def read_one() -> None:
                """The sender's next reply opened, the request ahead of it sent, and
                its genes' check started."""
                nonlocal outstanding
                reply = await fs.receive()
                outstanding = False
                opened = await trio.to_thread.run_sync(open_batch, reply, link.arrived())
                if opened.ahead is not None:
                    await send(opened.ahead)
                ahead.append((opened, check_job(receiver.check, opened.batch.genes)))

            async def commit_reading_ahead() -> list[ApplyStats]:
                """Commit the staged group in a worker thread; meanwhile read, open and
                check the batches after it (up to a group's worth)."""
                nonlocal committing
                committing = True
                job = ThreadJob.start(commit)
                try:
                    while (outstanding and not round_.done and not job.done
                           and len(ahead) < group.max_batches):
                        await read_one()
                finally:
                    # The commit cannot be interrupted: the round ends only after it.
                    with trio.CancelScope(shield=True):
                        await job.wait()
                    if job.ok:
                        committing = False
                        st.checkpoint = receiver.checkpoint
                    else:  # the commit's own error goes first, over a read's
                        job.result()  # raises; `committing` stays set
                return job.result()

            try:
                await send(round_.start())
                while True:
                    # Staging is shielded and batches read ahead need no read: a cut
                    # round must still notice it was cancelled before the next one.
                    await trio.lowlevel.checkpoint_if_cancelled()
                    if not ahead:
                        await read_one()
                    opened, check = ahead.popleft()
                    payload = opened.payload
                    link.busy_from()
                    # A batch whose check has begun is staged even if the round is cut
                    # meanwhile: the cut round then commits it with the rest (below).
                    with trio.CancelScope(shield=True):
                        await check.wait()
                        step = await trio.to_thread.run_sync(stage, opened, check.result())
                    applied = await commit_reading_ahead() if step.done else []
                    link.busy_until()
                    st.head = opened.head
                    self._count_step(stats, step)
                    self._count_applied(stats, applied)
                    if step.rewound:
                        await self._feed_went_back(peer, st, opened.head)
                    if step.done:
                        break
                    svc.set_lag(peer, st)
                    if step.send is not None:
                        await send(step.send)
                    if group.due():
                        self._count_applied(stats, await commit_reading_ahead())
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

    def _count_step(self, stats: RoundStats, step: PullStep) -> None:
        """A staged batch: its payload and the genes its checks rejected."""
        svc, outcome, payload = self.svc, step.outcome, step.opened.payload
        stats.batches += 1
        stats.payload_in += payload
        stats.rejected += len(outcome.rejected)
        svc.metrics.sync_bytes.labels(direction="in", kind="payload").inc(payload)
        svc.metrics.sync_rejected.inc(len(outcome.rejected))
        for bad in outcome.rejected:
            svc.log.warning("sync.rejected", peer=stats.peer, gene=bad.gene_id,
                            reason=bad.reason)

    def _count_applied(self, stats: RoundStats, applied: list[ApplyStats]) -> None:
        """A committed group: what its batches did in the store."""
        svc = self.svc
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
        if any(a.applied for a in applied):
            svc.notify_local_change(stats.peer)  # our feed grew: hint our other peers

    async def _feed_went_back(self, peer: str, st: PeerSyncState, head: int) -> None:
        """The peer's feed head is below our checkpoint: it was restored from a backup.
        Its new writes will reuse sequence numbers we think we have, so follow its head
        and let anti-entropy find what the gap hides."""
        svc = self.svc
        svc.log.warning("sync.feed_rewound", peer=peer, checkpoint=st.checkpoint, head=head)
        await trio.to_thread.run_sync(svc.cortex.set_checkpoint, peer, head)
        st.checkpoint, st.head, st.repair_due = head, head, True
        st.wake.set()


def received_by_sender(batches: Iterable[StagedBatch]) -> list[tuple[str, list[Gene]]]:
    """A committed group's genes per sender, in order: the received hook runs once a
    group, not once a batch (auto-adaptation writes its book on each call, an fsync of
    its own: up to 8 of them a group before; issue 15)."""
    out: dict[str, list[Gene]] = {}
    for batch in batches:
        out.setdefault(batch.sender, []).extend(batch.genes)
    return list(out.items())
