"""Repair fetches, pipelined and group-committed (issue 15).

Why: after a reconcile the initiator fetches what it lacks in chunks of
`MAX_FETCH_HASHES` (256). One request at a time, each answer verified, applied in its
own fsync'd transaction and audited in another before the next request went out, a
backfill of 100k genes was ~400 strictly sequential round trips, each waiting on both
sides' disks. Here up to `FETCH_WINDOW` requests are in flight (the responder answers in
order on the one stream), answers are verified as they come, and the verified answers
that are waiting are applied together, with their audit records, in ONE transaction
(at most `APPLY_GROUP` answers a group): the same checks, records and fsyncs per gene
as before, fewer fsyncs per gene, and the two sides' work overlaps.

Nothing is weakened: every gene is verified and passes the receiver's view (`accept`)
before its group is applied; a bad answer is the peer's fault (`RemoteProtocolError`)
and ends the round, with the groups already committed kept (each was applied whole).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Final

import trio

from gd.genome.gene import Gene
from gd.node.gc_tuning import batch_gc
from gd.node.net.streams import FramedStream
from gd.node.services.sync_group import AuditIn, commit_audited
from gd.node.services.sync_state import RoundStats
from gd.node.services.sync_views import ReceiverView
from gd.node.store.sync_store import ApplyStats
from gd.protocol.repair import FetchedVersions, check_versions
from gd.protocol.sync import POLICY_REFUSAL, RejectedGene, WireChecker
from gd.protocol.sync_frames import FetchVersions
from gd.protocol.wire import Message

if TYPE_CHECKING:
    from gd.node.services.sync_service import SyncService

# Fetch requests in flight: enough to keep the responder busy while we verify and apply
# (each answer is at most 256 genes, so 4 in flight stay within a few MiB).
FETCH_WINDOW: Final = 4
# Verified answers applied in one transaction at most (8 x 256 genes: one fsync per
# ~2k genes, as the feed's group commit, `sync_group.MAX_GROUP_GENES`).
APPLY_GROUP: Final = 8


async def fetch_all(svc: SyncService, fs: FramedStream, peer: str,
                    fetches: list[FetchVersions], stats: RoundStats) -> int:
    """Send `fetches`, `FETCH_WINDOW` at a time, and apply what comes back in groups;
    returns the round trips made."""
    send, receive = trio.open_memory_channel[tuple[FetchVersions, FetchedVersions]](
        APPLY_GROUP)
    view = svc.receiver_view(peer)

    async def pump() -> None:
        async with send:
            in_flight = list(fetches[:FETCH_WINDOW])
            nxt = len(in_flight)
            for fetch in in_flight:
                await fs.send(fetch)
            while in_flight:
                fetch = in_flight.pop(0)
                reply = await fs.receive()
                if nxt < len(fetches):  # keep the window full while this one is checked
                    in_flight.append(fetches[nxt])
                    await fs.send(fetches[nxt])
                    nxt += 1
                # Verified here; the view judges in the applier's thread (it collects
                # what it judged for the group's audit records: one thread at a time).
                checked = await trio.to_thread.run_sync(
                    _check, reply, fetch.hashes, svc.verify_pool)
                await send.send((fetch, checked))

    async def apply() -> None:
        async with receive:
            async for first in receive:
                group = [first]
                while len(group) < APPLY_GROUP:
                    try:
                        group.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await _apply_group(svc, view, peer, [c for _, c in group], stats)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            nursery.start_soon(apply)
    except BaseExceptionGroup as group:
        # The caller's guard tells a cut stream (StreamGone) and a peer's fault
        # (RemoteProtocolError) from a local failure by type: hand it the first error
        # itself, not the nursery's group (found by tests/sim/service_sim_sov.py).
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return len(fetches)


def _verified_only(gene: Gene) -> bool:
    return True


def _check(reply: Message, hashes: Sequence[bytes], pool: WireChecker | None
           ) -> FetchedVersions:
    """`check_versions` with the collector out of the way, as the feed's `open` runs
    (`batch_gc`: decoding and rebuilding an answer's genes makes short-lived acyclic
    objects by the ten thousand)."""
    with batch_gc():
        return check_versions(reply, hashes, _verified_only, check=pool)


def _apply_fetched(svc: SyncService, peer: str, good: list[Gene], audit: AuditIn | None
                   ) -> list[ApplyStats]:
    """Fetched genes are no position in the peer's feed: no checkpoint moves."""
    if audit is None:  # a view that audits after the apply (and stores that stand in)
        return [svc.store.apply_batch(peer, good, None)]
    return svc.store.apply_batches([(peer, good, None)], audit=audit)


async def _apply_group(svc: SyncService, view: ReceiverView, peer: str,
                       group: list[FetchedVersions], stats: RoundStats) -> None:
    verified = [g for fetched in group for g in fetched.good]
    refused: list[RejectedGene] = [r for fetched in group for r in fetched.rejected]

    def apply() -> ApplyStats:
        with batch_gc():  # as the feed's group commit (`sync_group`)
            return judge_and_commit()

    def judge_and_commit() -> ApplyStats:
        good = []
        for gene in verified:  # the receiver's policy, in order (as `verify_genes`)
            if view.accept(gene):
                good.append(gene)
            else:
                refused.append(RejectedGene(gene.id, POLICY_REFUSAL))
        # The genes and their audit records in one transaction (ADR 0040).
        applied = commit_audited(partial(_apply_fetched, svc, peer, good), view)[0]
        if svc.on_received is not None:
            svc.on_received(peer, good)
        return applied

    applied = await trio.to_thread.run_sync(apply)
    if applied.applied:
        svc.notify_local_change(peer)  # our feed grew: hint our other peers
    refused += applied.refused
    stats.repaired += applied.applied
    stats.genes_in += applied.applied
    stats.conflicts += applied.queued
    stats.rejected += len(refused)
    stats.payload_in += sum(fetched.payload for fetched in group)
    svc.metrics.sync_genes.labels(direction="in").inc(applied.applied)
    svc.metrics.sync_conflicts.inc(applied.queued)
    svc.metrics.sync_rejected.inc(len(refused))
    for bad in refused:
        svc.log.warning("sync.rejected", peer=peer, gene=bad.gene_id, reason=bad.reason)
