"""Change-feed sync between two peers, sans-I/O (issue 6, part 2).

Every node keeps a local change feed: each stored gene version gets the next sequence
number. To catch up with a peer, a receiver asks for the peer's feed entries after the
checkpoint it holds for that peer; the sender answers with a batch of the genes its
share policy lets that receiver see; the receiver verifies each gene's signature,
applies the batch in one transaction *together with* the new checkpoint, and asks for
the next batch. This is CouchDB's ``_changes?since=`` replication and Syncthing's delta
index exchange, reduced to two messages (`gd.protocol.sync_messages`).

Why it survives flaky links: the checkpoint only moves in the same transaction that
stores the batch, so a cut connection resumes from the last applied batch; a duplicate
or replayed batch (its `since` is not our checkpoint any more) changes nothing; and
applying a version twice is a no-op anyway (`gd.crdt.conflict` ignores a version we
already hold).

The cores never read the disk or a socket. `SyncSender` is handed a function that reads
its feed and a share policy; `SyncReceiver` is handed the function that applies a
verified batch and the checkpoint in one LMDB transaction. `node/` supplies both.

Sovereignty: default deny. A sender without a policy shares nothing; the policy runs
before encoding, so withheld genes never reach the wire. The receiver runs its own
acceptance check again (`accept`), and genes it refuses are reported, not applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from gd.crdt.conflict import QUEUE_ALL, ConflictDecision, ConflictPolicy, VersionStamp, decide
from gd.genome.errors import SignatureError, ValidationError
from gd.genome.gene import Gene, id_is_bound
from gd.protocol.errors import LocalProtocolError
from gd.protocol.sync_messages import (
    MAX_BATCH_GENES,
    ChangeBatch,
    ChangesRequest,
    SyncProtocolError,
)

# A sender reads at most this many feed entries to build one batch, whether or not its
# policy lets them through. Without it, a receiver that may see one domain of a feed
# full of others would make the sender scan the whole feed in one request; with it the
# batch comes back short (maybe empty) with `more` set, and the scan resumes next time.
MAX_SCAN_PER_BATCH: Final = 8 * MAX_BATCH_GENES

# (since, limit) -> the feed entries with since < seq, in ascending seq order, at most
# `limit` of them: (seq, gene). May be lazy: the sender stops iterating at a full batch.
# (seq, None): an entry the reader knows, without decoding it, this receiver never gets
# (its own version, ADR 0048): not sent, but counted and passed like a withheld one.
FeedReader = Callable[[int, int], Iterable[tuple[int, Gene | None]]]
# (receiver peer id, gene) -> may this receiver have this gene?
SharePolicy = Callable[[str, Gene], bool]
# (sender peer id, verified genes, new checkpoint): store both in one transaction. What
# it returns (the store's own statistics) is ignored here.
BatchApplier = Callable[[str, Sequence[Gene], int], object]
# Wire genes -> `verify_wire` of each, in order. The default runs them one by one; a
# node may run them across cores (`gd.node.services.verify_pool`): the checks are pure.
WireChecker = Callable[[Sequence[dict[str, Any]]], Sequence[tuple[Gene | None, str]]]
# One gene's verdict from a `WireChecker`: (the gene, "") or (None, why it is refused).
Verdict = tuple[Gene | None, str]


class SyncUsageError(LocalProtocolError, ValueError):
    """This side was misused (a call out of order, an inconsistent feed reader): our
    bug, never the peer's (`LocalProtocolError`)."""


def share_nothing(receiver: str, gene: Gene) -> bool:
    """The default policy until a share policy exists for a peer: nothing leaves."""
    return False


def stamp_of(gene: Gene) -> VersionStamp:
    """The conflict rule's view of a gene version."""
    return VersionStamp.of(gene.vv, gene.hlc, gene.version_hash)


def decide_for(local: Gene | None, incoming: Gene, policy: ConflictPolicy = QUEUE_ALL,
               **kw: Any) -> ConflictDecision:
    """`gd.crdt.conflict.decide` on two genes (for the applier inside its transaction)."""
    return decide(None if local is None else stamp_of(local), stamp_of(incoming), policy, **kw)


class SyncSender:
    """Answers one receiver's `ChangesRequest`s from the local feed (stateless per request)."""

    def __init__(self, receiver: str, read_feed: FeedReader,
                 policy: SharePolicy = share_nothing) -> None:
        self.receiver = receiver
        self.read_feed = read_feed
        self.policy = policy
        self.genes_sent = 0

    def receive(self, data: bytes) -> bytes:
        """Decode a request (`SyncProtocolError` if bad) and return the encoded batch."""
        request = ChangesRequest.decode(data)
        return self.batch(request).encode()

    def batch(self, request: ChangesRequest) -> ChangeBatch:
        upto, more, genes = self.select(request)
        return ChangeBatch(request.since, upto, more, tuple(g.to_wire() for g in genes))

    def select(self, request: ChangesRequest) -> tuple[int, bool, list[Gene]]:
        """What `batch` answers, as (upto, more, genes): the genes themselves, so a
        caller that holds their stored bytes sends those verbatim instead of decoding
        and re-encoding them (`gd.protocol.sync_frames.SyncBatch.pack_wire`)."""
        entries = self.read_feed(request.since, MAX_SCAN_PER_BATCH + 1)
        genes: list[Gene] = []
        upto = request.since
        more = False
        for scanned, (seq, gene) in enumerate(entries):
            if seq <= upto:
                raise SyncUsageError(f"feed reader returned seq {seq} after {upto}")
            if len(genes) == request.max_genes or scanned == MAX_SCAN_PER_BATCH:
                more = True
                break
            upto = seq
            if gene is not None and self.policy(self.receiver, gene):
                genes.append(gene)
        self.genes_sent += len(genes)
        return upto, more, genes


@dataclass(frozen=True, slots=True)
class RejectedGene:
    """A gene of a batch that was not applied, and why (for the audit log)."""

    gene_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What receiving one batch did."""

    applied: tuple[Gene, ...] = ()
    rejected: tuple[RejectedGene, ...] = ()
    stale: bool = False  # a duplicate or replayed batch: nothing was done
    more: bool = False  # the sender has more: send `request()` again
    checkpoint: int = 0


@dataclass
class SyncReceiver:
    """Pulls one sender's feed from `checkpoint` on, one verified batch at a time."""

    sender: str
    apply_batch: BatchApplier
    checkpoint: int = 0
    accept: Callable[[Gene], bool] = field(default=lambda gene: True)
    max_genes: int = MAX_BATCH_GENES
    genes_received: int = 0
    check: WireChecker | None = None

    def request(self) -> bytes:
        """The request for the next batch (also what a resumed connection sends first)."""
        return ChangesRequest(self.checkpoint, self.max_genes).encode()

    def receive(self, data: bytes) -> BatchOutcome:
        """Verify and apply a batch; advance the checkpoint only after `apply_batch`.

        Raises `SyncProtocolError` for a malformed message (nothing applied). A batch
        that does not start at our checkpoint is stale (a duplicate, a replay, or the
        answer to a request we superseded) and is ignored. Inside a batch, each gene
        that fails to decode, verify or pass `accept` is rejected on its own; the others
        apply. If `apply_batch` raises, the checkpoint stays where it was.
        """
        return self.receive_batch(ChangeBatch.decode(data))

    def receive_batch(self, batch: ChangeBatch,
                      checked: Sequence[Verdict] | None = None) -> BatchOutcome:
        """`receive` of an already decoded batch (a pipelining caller decodes first to
        ask for the next batch while this one is verified and applied). `checked`: the
        batch's verdicts when the caller already ran `check` over `batch.genes` (a
        pipelining caller checks the next batch while the previous one commits)."""
        if batch.since != self.checkpoint:
            return BatchOutcome(stale=True, checkpoint=self.checkpoint)
        if len(batch.genes) > self.max_genes:
            raise SyncProtocolError(f"batch of {len(batch.genes)} genes, we asked for at "
                                    f"most {self.max_genes}")
        good, rejected = verify_genes(batch.genes, self.accept, check=self.check,
                                      checked=checked)
        self.apply_batch(self.sender, tuple(good), batch.upto)
        self.checkpoint = batch.upto
        self.genes_received += len(good)
        return BatchOutcome(good, rejected, False, batch.more, batch.upto)


# Why a verified gene the receiver's view did not `accept` is rejected.
POLICY_REFUSAL: Final = "refused by the receiver's own policy"


def verify_genes(wires: Sequence[dict[str, Any]], accept: Callable[[Gene], bool], *,
                 check: WireChecker | None = None, checked: Sequence[Verdict] | None = None
                 ) -> tuple[tuple[Gene, ...], tuple[RejectedGene, ...]]:
    """Decode, check and `accept`-filter wire genes one by one: a bad gene is rejected on
    its own and the others pass (used by the feed and by repair fetches).

    The checks, in order (DESIGN.md, "Trust boundaries"): the shape and values, the
    signature, the id bound to origin, domain and name (`id_is_bound`), the author's
    counter in the version vector — and only then the receiver's policy, which judges a
    domain that can no longer lie.

    `check` runs `verify_wire` over all of them (possibly in parallel, same results in
    the same order); `accept` then runs here, in order, in the caller's thread.
    `checked`: those verdicts, when the caller already has them (then `check` is not
    called); one per wire gene, or SyncUsageError."""
    good: list[Gene] = []
    rejected: list[RejectedGene] = []
    if checked is None:
        checked = check(wires) if check is not None else [verify_wire(w) for w in wires]
    if len(checked) != len(wires):
        raise SyncUsageError(f"checker returned {len(checked)} results for {len(wires)}")
    for i, (wire, (gene, reason)) in enumerate(zip(wires, checked, strict=True)):
        if gene is not None and not accept(gene):
            gene, reason = None, POLICY_REFUSAL
        if gene is None:
            rejected.append(RejectedGene(_claimed_id(wire, i), reason))
        else:
            good.append(gene)
    return tuple(good), tuple(rejected)


def check_received(gene: Gene) -> str:
    """Why a verified (signature-checked) gene from a peer must be refused, or "".

    Pure and cheap, so every path that takes genes from the network runs it. What needs
    the store (a version keeps the stored gene's origin and domain; a gene claiming our
    origin must be one we authored) is `refusal_against` in `SyncStore.apply_batch`."""
    if not id_is_bound(gene):
        return (f"id {gene.id} is not the id of origin {gene.origin}, domain "
                f"{gene.domain}, name {gene.name!r}: a version may change neither")
    if gene.author not in gene.vv:
        # Only an edit bumps its author's counter; a version whose author has no
        # counter claims an edit it never recorded.
        return f"author {gene.author} has no entry in the version vector"
    return ""


def refusal_against(local: Gene | None, incoming: Gene, local_peer: str) -> str:
    """Why `incoming` may not be applied over what we hold (`local`, the head), or "".

    A version keeps its gene's origin and domain (the id already binds them; this is the
    second lock, and catches a store written before ids were bound). A gene claiming our
    origin that we never stored is one we did not author: a stranger would otherwise get
    it stored, and derived copies of it signed with our key (issue 11, item 3). Versions
    of a gene we hold may come from partners (a conflict resolution, a rollback): they
    land `adaptation_pending` like any received version, and a person decides."""
    if local is not None and (incoming.origin, incoming.domain) != (local.origin,
                                                                    local.domain):
        return (f"version changes origin/domain of gene {local.id} ({local.origin}, "
                f"{local.domain}) to ({incoming.origin}, {incoming.domain})")
    if local is None and incoming.origin == local_peer and incoming.author != local_peer:
        return (f"claims our origin for a gene we never authored (signed by "
                f"{incoming.author})")
    return ""


def verify_wire(wire: dict[str, Any]) -> tuple[Gene | None, str]:
    """One wire gene decoded, signature-checked and `check_received`: (gene, "") or
    (None, why). Pure and thread-safe (pynacl releases the GIL while it verifies)."""
    try:
        gene = Gene.from_wire(wire)
        gene.verify()
    except (ValidationError, SignatureError, TypeError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    reason = check_received(gene)
    return (None, reason) if reason else (gene, "")


def _claimed_id(wire: dict[str, Any], index: int) -> str:
    body = wire.get("body")
    claimed = body.get("id") if isinstance(body, dict) else None
    return claimed if isinstance(claimed, str) and len(claimed) <= 128 else f"#{index}"
