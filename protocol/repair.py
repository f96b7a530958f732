"""Anti-entropy repair over `/gd/reconcile`: the rules of the conversation around the
reconcile core, sans-I/O (issue 12, item 4).

`gd.protocol.reconcile` finds which versions each side lacks; this module says what the
two sides exchange around it:

* **Items** (`items_for`): a responder or initiator names the heads the peer may see,
  in the form the peer would get them (a sovereignty filter may derive an anonymised
  form), plus the heads the peer itself authored: it holds those already, so naming
  them tells it nothing, and without them every round would find "missing" the genes
  it sent us that we may not send back.
* **Fetch** (`RepairRound.fetches`, `FetchCheck`): the initiator asks for what it lacks
  in chunks of `MAX_FETCH_HASHES`; the answer may hold at most as many genes as were
  asked for, each one checked on its own, and a version that was not asked for is the
  peer's fault (`RemoteProtocolError`): nothing of that answer is applied.
* **Serving a fetch** (`versions_for`): only versions we hold *and* may share, in the
  form the peer may have; unknown or withheld hashes are left out silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from gd.genome.gene import Gene
from gd.protocol.errors import LocalProtocolError, RemoteProtocolError
from gd.protocol.reconcile import ItemSet, Reconciler
from gd.protocol.reconcile_messages import Item, ReconcileProtocolError
from gd.protocol.repair_items import Outgoing, item_of
from gd.protocol.sync import RejectedGene, WireChecker, verify_genes
from gd.protocol.sync_frames import (
    MAX_FETCH_HASHES,
    FetchVersions,
    ReconcileEnd,
    ReconcileStep,
    Versions,
    compress,
    decode_wire_genes,
    decompress,
    wire_array,
)
from gd.protocol.wire import Message


def items_for(peer: str, heads: Iterable[Gene], outgoing: Outgoing) -> list[Item]:
    """(hlc, version hash) of the heads `peer` may see, as it would get them, plus the
    heads it authored (module docstring). Judges every head: the daemon keeps these
    per peer instead (`gd.protocol.repair_items.RepairItems`)."""
    return [item for item in (item_of(peer, g, outgoing) for g in heads) if item is not None]


def versions_for(wanted: Sequence[bytes], by_hash: Callable[[bytes], Gene | None],
                 head_of: Callable[[str], Gene | None], heads: Callable[[], Iterable[Gene]],
                 outgoing: Outgoing,
                 derived: Callable[[bytes], str | None] | None = None) -> list[Gene]:
    """The requested versions we hold and may share, in request order, in the form
    `outgoing` gives them. The policy judges the head when the version asked for is the
    head (it sees the local status: revoked, retired...). With `derived` (hash of a
    named form -> its gene id, from the peer's `RepairItems`) a hash we named costs one
    head read and one decision, derived forms included, and only other hashes are
    looked up by hash; without it, forms not found by hash are searched among every
    head's (O(all genes): tests and plain policies only)."""
    order = list(dict.fromkeys(wanted))
    found: dict[bytes, Gene] = {}
    for h in order:
        if derived is not None:
            gene_id = derived(h)
            named = head_of(gene_id) if gene_id is not None else None
            out = outgoing(named) if named is not None else None
            if out is not None and out.version_hash == h:
                found[h] = out
                continue
        gene = by_hash(h)
        if gene is None:
            continue
        head = head_of(gene.id)
        if head is not None and head.version_hash == h:
            gene = head
        out = outgoing(gene)
        if out is not None and out.version_hash == h:
            found[h] = out
    if len(found) < len(order) and derived is None:
        missing = set(order) - set(found)
        for g in heads():
            out = outgoing(g)
            if out is not None and out.version_hash in missing:
                found[out.version_hash] = out
    return [found[h] for h in order if h in found]


def pack_versions(genes: Sequence[Gene], zstd: bool) -> Versions:
    """The `Versions` frame of the genes a fetch found."""
    data, packed = compress(wire_array([g.wire_bytes for g in genes]), zstd)
    return Versions(genes=data, zstd=packed)


@dataclass(frozen=True, slots=True)
class FetchedVersions:
    """A checked fetch answer: the genes to apply, the ones refused, payload bytes."""

    good: tuple[Gene, ...]
    rejected: tuple[RejectedGene, ...]
    payload: int


def check_versions(reply: Message, asked: Sequence[bytes], accept: Callable[[Gene], bool],
                   *, check: WireChecker | None = None) -> FetchedVersions:
    """The fetch rules on the initiator's side (module docstring): at most as many
    genes as asked for, each verified and `accept`-ed on its own, none unasked."""
    if not isinstance(reply, Versions):
        raise RemoteProtocolError(f"expected gd.reconcile.versions, got {reply.TYPE}")
    raw = decompress(reply.genes, reply.zstd)
    wires = decode_wire_genes(raw, len(asked))
    good, rejected = verify_genes(wires, accept, check=check)
    wanted = set(asked)
    unasked = [g for g in good if g.version_hash not in wanted]
    if unasked:
        raise RemoteProtocolError(f"sent version {unasked[0].version_hash.hex()[:16]} "
                                  "that was not asked for")
    return FetchedVersions(good, rejected, sum(len(g.wire_bytes) for g in good))


class RepairRound:
    """The initiator's side of one repair: reconcile steps, then fetches, then the end."""

    def __init__(self, items: ItemSet | Iterable[Item], *, zstd: bool = False) -> None:
        self.reconciler = Reconciler.initiator(items)
        self.zstd = zstd
        self.round_trips = 0

    def start(self) -> ReconcileStep:
        return ReconcileStep(self.reconciler.initiate())

    def receive(self, reply: Message) -> ReconcileStep | None:
        """The responder's step in; our next step out, or None once reconciled."""
        self.round_trips += 1
        if not isinstance(reply, ReconcileStep):
            raise RemoteProtocolError(f"expected gd.reconcile.step, got {reply.TYPE}")
        try:
            out = self.reconciler.receive(reply.msg)
        except ReconcileProtocolError as exc:
            raise RemoteProtocolError(f"bad reconcile message: {exc}") from None
        return None if out is None else ReconcileStep(out)

    @property
    def need(self) -> set[bytes]:
        return self.reconciler.need

    @property
    def have(self) -> set[bytes]:
        return self.reconciler.have

    def fetches(self) -> list[FetchVersions]:
        """What we lack, in request-sized chunks (sorted: a replay asks the same)."""
        need = sorted(self.need)
        return [FetchVersions(tuple(need[i:i + MAX_FETCH_HASHES]), zstd=self.zstd)
                for i in range(0, len(need), MAX_FETCH_HASHES)]

    def end(self) -> ReconcileEnd:
        return ReconcileEnd(you_lack=len(self.have))


def answer_step(responder: Reconciler, step: ReconcileStep) -> ReconcileStep:
    """The responder's answer to one step (a responder always answers)."""
    try:
        reply = responder.receive(step.msg)
    except ReconcileProtocolError as exc:
        raise RemoteProtocolError(f"bad reconcile message: {exc}") from None
    if reply is None:
        raise LocalProtocolError("a reconcile responder always answers a step")
    return ReconcileStep(reply)

