"""Group commit on the sync receiver (issue 15, item 1; ADR 0031 "what remains").

Each received batch used to be applied in its own fsync'd LMDB transaction: with 256
genes a batch (the protocol's cap) the fsync alone cost ~60 µs a gene on the 2-core
machine. The puller now *stages* each verified batch here and commits several of them
in ONE transaction (`SyncStore.apply_batches`): the batches that arrived while the
previous group was being received and checked join the next commit, up to a bound in
batches, payload bytes and age.

What "acknowledged" means for a pull: nothing is acknowledged to the sender; the
receiver's checkpoint is the only promise, and it advances in the same transaction as
the genes of every batch it covers. A crash (or a cut link) before a group commits
loses only batches the checkpoint on disk does not cover, and the next round asks for
them again; a committed group is all there, in order. Nothing here reads a socket or
starts a thread: the driver (`gd.node.services.sync_pull`) decides when to call
`commit` and runs it in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from gd.genome.gene import Gene
from gd.node.gc_tuning import batch_gc
from gd.node.services.sync_views import ReceiverView
from gd.node.store.lmdb_tables import Txn
from gd.node.store.sync_store import ApplyStats, SyncStore
from gd.protocol.sync import RejectedGene

# Writes a group's audit records inside the transaction that applies it.
AuditIn = Callable[[Txn, list[ApplyStats]], object]

# A group holds at most this many batches (8 x 256 genes: one fsync per ~2k genes) ...
MAX_GROUP_BATCHES: Final = 8
# ... and about this many payload bytes (what a crash may make us fetch again) ...
MAX_GROUP_BYTES: Final = 8 << 20
# ... and this many genes: batches grow with the link (up to ~1 MiB each), and a group
# must commit well inside the sender's idle timeout (10 s), since the puller sends
# nothing while it commits (8 batches of ~700 big genes stalled a cold sync for 10 s).
MAX_GROUP_GENES: Final = 2048
# ... and waits at most this long after its first batch was staged, so a trickle of
# small batches on a slow link is still committed promptly.
MAX_GROUP_AGE_S: Final = 0.5


@dataclass(frozen=True, slots=True)
class StagedBatch:
    """A verified, accepted batch waiting for its group's transaction."""

    sender: str
    genes: tuple[Gene, ...]
    upto: int | None
    payload: int


class GroupCommit:
    """Verified batches of one pull, committed several at a time (see the module)."""

    def __init__(self, store: SyncStore, monotonic: Callable[[], float], *,
                 max_batches: int = MAX_GROUP_BATCHES, max_bytes: int = MAX_GROUP_BYTES,
                 max_age_s: float = MAX_GROUP_AGE_S,
                 max_genes: int = MAX_GROUP_GENES) -> None:
        if max_batches < 1 or max_bytes < 1 or max_age_s < 0 or max_genes < 1:
            raise ValueError("group bounds must be positive")
        self.store = store
        self._now = monotonic
        self.max_batches, self.max_bytes, self.max_age_s = max_batches, max_bytes, max_age_s
        self.max_genes = max_genes
        self._genes = 0
        self._staged: list[StagedBatch] = []
        self._bytes = 0
        self._first_at = 0.0
        self.commits = 0

    @property
    def staged(self) -> Sequence[StagedBatch]:
        return tuple(self._staged)

    def stage(self, sender: str, genes: Sequence[Gene], upto: int | None,
              payload: int = 0) -> None:
        """Hold one verified batch for the next commit (the `SyncReceiver` applier)."""
        if not self._staged:
            self._first_at = self._now()
        self._staged.append(StagedBatch(sender, tuple(genes), upto, payload))
        self._bytes += payload
        self._genes += len(genes)

    def due(self) -> bool:
        """Whether the staged group reached a bound and must commit now."""
        if not self._staged:
            return False
        return (len(self._staged) >= self.max_batches or self._bytes >= self.max_bytes
                or self._genes >= self.max_genes
                or self._now() - self._first_at >= self.max_age_s)

    def commit(self, audit: AuditIn | None = None) -> list[tuple[StagedBatch, ApplyStats]]:
        """Apply every staged batch, in order, in one transaction, with `audit(txn,
        stats)` writing the group's audit records in it; returns each batch with what
        it did. On an error nothing was committed and the batches stay staged (the
        caller ends the round; they are fetched again)."""
        if not self._staged:
            return []
        group = list(self._staged)
        batches = [(b.sender, b.genes, b.upto) for b in group]
        with batch_gc():
            # Only a caller with an audit passes it on: stores that stand in for
            # `SyncStore` (the simulations' sabotage stores) take the batches alone.
            stats = (self.store.apply_batches(batches) if audit is None
                     else self.store.apply_batches(batches, audit=audit))
        self._staged.clear()
        self._bytes = self._genes = 0
        self.commits += 1
        return list(zip(group, stats, strict=True))

    def drop(self) -> int:
        """Forget the staged batches (the round failed before they committed); returns
        how many. The checkpoint on disk does not cover them."""
        n = len(self._staged)
        self._staged.clear()
        self._bytes = self._genes = 0
        return n


def commit_audited(apply: Callable[[AuditIn | None], list[ApplyStats]],
                   view: ReceiverView) -> list[ApplyStats]:
    """`apply(audit)` a group with the receiver view's records in its transaction, then
    close the view's batch: the genes and their `gene_received` / `gene_refused`
    records commit together (ADR 0040). A view without `audit_in` (the plain
    `AcceptView`, the simulations' wrappers) is told after the commit, as before."""
    audit_in: Callable[[Txn, list[RejectedGene]], object] | None = getattr(
        view, "audit_in", None)
    finish: Callable[..., object] = view.finish_batch
    if audit_in is None:
        applied = apply(None)
        finish(refused_of(applied))
        return applied

    def audit(txn: Txn, stats: list[ApplyStats]) -> None:
        audit_in(txn, refused_of(stats))

    applied = apply(audit)
    finish(refused_of(applied), audited=True)
    return applied


def refused_of(stats: Sequence[ApplyStats]) -> list[RejectedGene]:
    """The genes the store refused in a group, in order (the view audits them)."""
    return [r for s in stats for r in s.refused]
