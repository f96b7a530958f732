"""The Cortex side of change-feed sync: the feed reader, the batch applier and the
conflict queue that `gd.protocol.sync` is handed.

`apply_batch` runs in ONE LMDB transaction: every incoming gene's conflict decision, the
versions it stores, the conflicts it queues and the sender's new checkpoint commit
together, so a crash between batches resumes exactly after the last applied one and a
crash inside a batch applies none of it.

What an incoming gene does (after `gd.crdt.conflict.decide`):

* APPLY / LWW won by the incoming side → stored as the gene's head with status
  `adaptation_pending` (a gene from a peer never acts here before a person approves it);
* IGNORE / LWW won by the local side → nothing;
* MERGE (the domain is configured `conflict = "merge"` and both versions have the same
  codons and action, `same_condition`) → every replica keeps the later of the two by
  (HLC, version hash), like LWW but only where the choice cannot change a decision;
* QUEUE (the default, and a "merge" pair whose conditions differ) → both versions kept
  in the conflict queue until `gd-node conflicts resolve`.

A resolution is a new version, signed by this node, whose version vector descends both
sides (`merged_vv` plus our own increment), so it syncs to every peer like any edit and
settles the conflict there too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gd.crdt.clock import Clock
from gd.crdt.conflict import (
    QUEUE_ALL,
    ConflictPolicy,
    Resolution,
    Side,
    VersionStamp,
    decide,
    merged_vv,
)
from gd.crdt.hlc import HLC
from gd.crdt.vclock import descends, merge
from gd.genome import canonical
from gd.genome.errors import DecodeError, ValidationError
from gd.genome.gene import Gene, GeneStatus
from gd.genome.identity import NodeKey
from gd.motors.domains.gene_check import PackMismatch, check_gene
from gd.node.clock import SYSTEM_CLOCK
from gd.node.domain_settings import conflict_policies, parse_domain_settings
from gd.node.store.cortex import Cortex, CortexError
from gd.node.store.cortex_env import UnknownGene
from gd.node.store.gathered_puts import GatheredGenePuts
from gd.node.store.lmdb_tables import Txn
from gd.protocol.sync import RejectedGene, decide_for, refusal_against, stamp_of

CONFLICTS_DB = "sync_conflicts"
# What `gd.crdt.conflict.decide` answers when we hold no version of the gene.
NEW_GENE = decide(None, VersionStamp.of({}, 0, bytes(32)))
# Feed entries read per Cortex call: one sync batch's worth (MAX_BATCH_GENES).
FEED_PAGE = 256
SEP = b"\x00"


@dataclass(frozen=True)
class Conflict:
    """Two concurrent versions of one gene awaiting a person's decision."""

    gene_id: str
    local: Gene
    remote: Gene
    sender: str
    queued_at: int

    @property
    def key(self) -> str:
        """`<gene id>:<first 8 bytes of the remote version hash>`: unique per pair."""
        return f"{self.gene_id}:{self.remote.version_hash[:8].hex()}"

    def to_plain(self) -> dict[str, Any]:
        return {"gene_id": self.gene_id, "local": self.local.to_wire(),
                "local_status": str(self.local.status), "queued_at": self.queued_at,
                "remote": self.remote.to_wire(), "sender": self.sender}

    @classmethod
    def from_plain(cls, data: Any) -> Conflict:
        return cls(gene_id=data["gene_id"],
                   local=Gene.from_wire(data["local"],
                                        status=GeneStatus(data["local_status"])),
                   remote=Gene.from_wire(data["remote"], status=GeneStatus.ADAPTATION_PENDING),
                   sender=data["sender"], queued_at=data["queued_at"])


def authored_by(raw: bytes, author: str, needle: bytes) -> bool:
    """Did `author` sign this stored version? Without building the gene: a version whose
    bytes do not hold `needle` (the author's id as msgpack encodes it) cannot name it as
    author; one that does (it may name it only in its version vector or parents: an
    edit of that peer's gene, which is ours to send) is decoded as plain msgpack and
    its body's `author` compared. Stored bytes were validated before they were stored."""
    if needle not in raw:
        return False
    record = canonical.decode(raw)
    return bool(record["body"]["author"] == author)


@dataclass
class ApplyStats:
    applied: int = 0
    ignored: int = 0
    queued: int = 0
    # Genes refused against what we hold (`gd.protocol.sync.refusal_against`).
    refused: list[RejectedGene] = dataclasses.field(default_factory=list)


CONFLICT_MODES = ("queue", "lww", "merge")


def domain_pack_refusal(gene: Gene) -> str:
    """Why `gene`'s values make no sense in its domain pack, or "" (issue 13, item 2:
    a received gene gets the same check as an imported one: refused and audited, never
    stored). Pure set lookups, so it runs on every received gene."""
    try:
        check_gene(gene)
    except PackMismatch as exc:
        return f"not valid in its domain pack: {exc}"
    return ""


def any_content(gene: Gene) -> str:
    """No content check: for the simulation's synthetic domains only."""
    return ""


def same_condition(a: Gene, b: Gene) -> bool:
    """The built-in merge rule's test: the two versions fire in the same states and take
    the same action, so they differ only in metadata (name, purpose, params)."""
    return a.codons == b.codons and a.action == b.action


def domain_conflict_policies(domains: Mapping[str, Any]) -> Callable[[str], ConflictPolicy]:
    """The `[domains.<name>] conflict = "queue" | "lww" | "merge"` settings of
    config.toml as the `policy_for(domain)` that SyncStore takes. Default: queue (a
    person decides; nothing is overwritten). Raises ConfigError on a bad value."""
    # One parser knows every key of [domains.X] (sync's `conflict` and the motors'
    # settings), so a motor key is not refused here and a typo is refused everywhere.
    return conflict_policies(parse_domain_settings(domains))


class SyncStore:
    """Feed reader, batch applier and conflict queue over one Cortex.

    `policy_for(domain)` gives the domain's conflict policy (LWW allowed? merge rule?);
    the default queues every concurrent edit."""

    def __init__(self, cortex: Cortex,
                 policy_for: Callable[[str], ConflictPolicy] = lambda domain: QUEUE_ALL,
                 clock: Callable[[], int] | None = None, *,
                 local_peer: str | None = None,
                 content_check: Callable[[Gene], str] | None = None) -> None:
        """`local_peer`: our peer id, so that a gene claiming our origin which we never
        authored is refused (the daemon always passes it; tools reading the conflict
        queue need not). `content_check(gene)` says why a received gene's values make no
        sense in its domain ("" when they do); by default the domain pack's
        `check_gene`. Only the simulation, whose domains are synthetic, swaps it."""
        self.cortex = cortex
        self.local_peer = local_peer or ""
        self.content_check = content_check or domain_pack_refusal
        self.policy_for = policy_for
        self.clock = clock or (lambda: 0)
        self._conflicts = cortex.open_db(CONFLICTS_DB)
        self.stats = ApplyStats()
        self.refused_total = 0

    # -- sender side ------------------------------------------------------------------
    def read_feed(self, since: int, limit: int, skip_author: str = ""
                  ) -> Iterator[tuple[int, Gene | None]]:
        """Feed entries after `since` as (seq, gene version). Deletions and versions that
        no longer exist locally (forgotten genes) are skipped but still advance the
        sequence the caller sees, so the receiver's checkpoint moves past them.

        Lazy: a gene is decoded only when the caller gets to it. The sender scans up to
        8x more entries than it sends (for filtered feeds) and stops at a full batch, so
        decoding eagerly would cost 8x the work on an unfiltered feed — so the feed itself
        is read in pages of FEED_PAGE entries too, not `limit` at once. A page's entries,
        versions and heads come from one read transaction (`CortexGenes.feed_page`: a
        consistent snapshot, and no two transactions per gene).

        `skip_author`: a version that peer authored comes as (seq, None), undecoded: the
        feed's echo suppression (`sync_serve.feed_policy`) never sends a peer its own
        version, and a receiver that pulled our copy of its feed spent ~176 us a gene
        decoding and judging each one only to drop it (issue 15, ADR 0048). The entry
        still counts, so the sender's `upto` and scan budget are what they were."""
        remaining = limit
        version_of = self.cortex.version_of
        needle = canonical.encode_plain(skip_author) if skip_author else b""
        while remaining > 0:
            page = self.cortex.feed_page(since, min(FEED_PAGE, remaining))
            for change, raw, head in page:
                since = change.seq
                if raw is None:  # a deletion, or a version no longer held
                    continue
                if needle and authored_by(raw, skip_author, needle):
                    yield change.seq, None
                    continue
                gene = version_of(raw, head)
                if gene.version_hash == change.vhash:
                    yield change.seq, gene
            if len(page) < min(FEED_PAGE, remaining):
                return
            remaining -= len(page)

    # -- receiver side ----------------------------------------------------------------
    def apply_batch(self, sender: str, genes: Sequence[Gene], upto: int | None) -> ApplyStats:
        """Apply verified genes from `sender` and move its checkpoint to `upto`, atomically.

        `upto=None` leaves the checkpoint alone: genes fetched by anti-entropy repair are
        not a position in the sender's feed. Returns what this batch did."""
        return self.apply_batches([(sender, genes, upto)])[0]

    def apply_batches(self, batches: Sequence[tuple[str, Sequence[Gene], int | None]],
                      audit: Callable[[Txn, list[ApplyStats]], object] | None = None
                      ) -> list[ApplyStats]:
        """`apply_batch` of several batches, in order, in ONE transaction (one fsync):
        the receiver's group commit (`gd.node.services.sync_group`). Each batch sees the
        ones before it, exactly as if applied one by one, and each sender's checkpoint
        ends at its last batch's `upto` in the same commit as the genes, so a crash
        keeps all of them or none. `audit(txn, stats)` then writes the group's audit
        records in the same transaction (a gene is never stored without its record;
        an error there stores nothing); it may run twice when the map grows, so it
        acts only through `txn`. Returns one `ApplyStats` per batch."""

        def run_all(txn: Txn) -> list[ApplyStats]:
            # The genes' writes gathered per table (ADR 0038): same records, less B-tree
            # work; `_apply_in` flushes a gene's writes before it reads that gene again.
            puts = GatheredGenePuts(self.cortex, txn)
            out = [self._apply_in(txn, sender, genes, upto, puts)
                   for sender, genes, upto in batches]
            puts.close()
            if audit is not None:
                audit(txn, out)
            return out

        out = self.cortex.write(run_all)
        for stats in out:
            self.stats.applied += stats.applied
            self.stats.ignored += stats.ignored
            self.stats.queued += stats.queued
            # A count: the store lives as long as the node.
            self.refused_total += len(stats.refused)
        return out

    def _apply_in(self, txn: Txn, sender: str, genes: Sequence[Gene], upto: int | None,
                  puts: GatheredGenePuts) -> ApplyStats:
        """One batch's decisions and writes inside the caller's transaction."""
        stats = ApplyStats()
        for incoming in genes:
            puts.before_read(incoming.id)
            local = self.cortex.get_gene_in(txn, incoming.id)
            refusal = (refusal_against(local, incoming, self.local_peer)
                       or self.content_check(incoming))
            if refusal:
                stats.refused.append(RejectedGene(incoming.id, refusal))
                continue
            # A gene we do not hold is applied whatever the policy (`decide` with no
            # local version); a cold sync is all such genes, so skip building stamps.
            decision = NEW_GENE if local is None else decide_for(
                local, incoming, self.policy_for(incoming.domain),
                mergeable=same_condition(local, incoming))
            if decision.resolution is Resolution.MERGE:
                # The domain's merge rule: both versions decide the same way (same
                # codons, same action), so every replica keeps the same one of the
                # two — the later by (HLC, version hash) — and nothing is queued.
                assert local is not None
                if stamp_of(incoming).lww_key <= stamp_of(local).lww_key:
                    stats.ignored += 1
                    continue
                decision = dataclasses.replace(decision, resolution=Resolution.LWW,
                                               keep=Side.INCOMING)
            if decision.stores_incoming:
                pending = incoming.with_local(status=GeneStatus.ADAPTATION_PENDING)
                # The decision is authoritative: the incoming version becomes head even
                # over a higher local version number, and replaces any body stored
                # under the same (id, version) — that one is a branch LWW discarded.
                puts.put(pending)
                self._settle_conflicts(txn, incoming)
                stats.applied += 1
            elif decision.resolution is Resolution.QUEUE:
                assert local is not None
                conflict = Conflict(incoming.id, local, incoming, sender, self.clock())
                # A queued version settles what it descends too (a resolution made
                # elsewhere that meets a newer local edit here): its pair replaces them.
                self._settle_conflicts(txn, incoming)
                txn.put(conflict.key.encode(), canonical.encode(conflict.to_plain()),
                        db=self._conflicts)
                stats.queued += 1
            else:
                stats.ignored += 1
        if upto is not None:
            self.cortex.set_checkpoint_in(txn, sender, upto)
        return stats

    def _settle_conflicts(self, txn: Txn, incoming: Gene) -> None:
        """Drop queued conflicts of this gene that `incoming` descends on both sides: a
        resolution made on another node settles the conflict here too."""
        prefix = incoming.id.encode() + b":"
        cursor = txn.cursor(db=self._conflicts)
        if not cursor.set_range(prefix):
            return
        settled = []
        for key, raw in cursor:
            if not key.startswith(prefix):
                break
            conflict = _decode_conflict(raw)
            if descends(incoming.vv, conflict.local.vv) and descends(incoming.vv,
                                                                     conflict.remote.vv):
                settled.append(key)
        for key in settled:
            txn.delete(key, db=self._conflicts)

    # -- conflict queue ---------------------------------------------------------------
    def conflicts(self) -> list[Conflict]:
        out = []
        with self.cortex.env.begin() as txn:
            for _, raw in txn.cursor(db=self._conflicts):
                out.append(_decode_conflict(raw))
        return out

    def conflict(self, key: str) -> Conflict:
        """A queued conflict by its key, or by gene id when that gene has exactly one."""
        with self.cortex.env.begin() as txn:
            raw = txn.get(key.encode(), db=self._conflicts)
            if raw is not None:
                return _decode_conflict(raw)
            matches = [v for k, v in txn.cursor(db=self._conflicts)
                       if k.split(b":", 1)[0] == key.encode()]
        if len(matches) == 1:
            return _decode_conflict(matches[0])
        if matches:
            raise CortexError(f"gene {key} has {len(matches)} conflicts: name one by its key")
        raise UnknownGene(f"no conflict {key!r} in the queue")

    def resolve(self, key: str, node_key: NodeKey, *, keep: str,
                replacement: Gene | None = None, hlc: int) -> Gene:
        """Settle a conflict: keep the `local` or `remote` content, or `replacement`'s
        (a gene read from a file). The result is a new native version by this node that
        descends both sides; the queue entry goes in the same transaction.

        "Both sides" includes what we hold *now*: the head may have moved on since the
        conflict was queued (local edits, other versions applied), so the resolution's
        vector merges the current head's too, and "local" means the current head. A
        vector built from the queued snapshot alone would be concurrent with those later
        versions, drop them from the gene's history and reuse our own counter for a
        second, different edit (found by tests/sim/fedsim.py)."""
        conflict = self.conflict(key)
        if keep == "file":
            if replacement is None:
                raise ValidationError("keep", "--keep FILE needs a gene file")
            if replacement.id != conflict.gene_id:
                raise ValidationError("id", f"the file's gene is {replacement.id}, "
                                      f"the conflict is about {conflict.gene_id}")
        elif keep not in ("local", "remote"):
            raise ValidationError("keep", "must be local, remote or a file")
        highest = self.cortex.next_version(conflict.gene_id) - 1

        def run(txn: Txn) -> Gene:
            local = self.cortex.get_gene_in(txn, conflict.gene_id) or conflict.local
            chosen = {"local": local, "remote": conflict.remote}.get(keep, replacement)
            assert chosen is not None
            vv = merged_vv(merge(local.vv, conflict.local.vv), conflict.remote.vv,
                           resolver=node_key.peer_id)
            version = max(local.version, conflict.local.version, conflict.remote.version,
                          highest) + 1
            resolved = dataclasses.replace(
                chosen, version=version, vv=dict(vv), hlc=hlc, author="", signature=b"",
                status=GeneStatus.NATIVE, successes=local.successes, failures=local.failures,
            ).signed(node_key)
            self.cortex.put_gene_in(txn, resolved)
            txn.delete(conflict.key.encode(), db=self._conflicts)
            return resolved

        return self.cortex.write(run)


# Fields of a resolution file that describe content; identity and causality (id,
# origin, domain, name — the id commits to them —, version, vv, hlc, author) come from
# the conflict and the resolving node.
RESOLUTION_FIELDS = ("codons", "action", "params", "purpose", "parents", "scope")


def replacement_from_plain(conflict: Conflict, data: Any) -> Gene:
    """The gene a resolution file means: its content fields laid over the local version.

    Accepts a gene as `gd-node genes show --json` / `conflicts show --json` print it, or
    a wire form `{"body": {...}, "sig": ...}`. ValidationError if it is about another
    gene or a field is invalid; unknown keys are ignored (those listings add some)."""
    if not isinstance(data, dict):
        raise ValidationError("file", "expected a JSON object describing a gene")
    fields_ = data.get("body", data)
    if not isinstance(fields_, dict):
        raise ValidationError("file.body", "expected an object")
    if fields_.get("id", conflict.gene_id) != conflict.gene_id:
        raise ValidationError("id", f"the file's gene is {fields_['id']}, the conflict is "
                              f"about {conflict.gene_id}")
    body = conflict.local.body()
    body.update({k: fields_[k] for k in RESOLUTION_FIELDS if k in fields_})
    try:
        return Gene.from_wire({"body": body, "sig": b""})
    except (TypeError, KeyError) as exc:
        raise ValidationError("file", f"not a gene: {exc}") from None


def resolve_conflict(store: SyncStore, node_key: NodeKey, key: str, keep: str,
                     content: dict[str, Any] | None, physical_ms: int | None = None, *,
                     clock: Clock = SYSTEM_CLOCK) -> Gene:
    """Settle conflict `key`: keep "local", "remote" or "file" (`content`: the fields of a
    JSON gene file laid over the local version). The new version is stamped by an HLC
    strictly above both sides' stamps and not behind our clock (`physical_ms` when given,
    else the injected `clock`: the daemon's, or the system's for a CLI without one)."""
    if keep == "file" and content is None:
        raise ValidationError("keep", "--keep FILE needs the file's content")
    conflict = store.conflict(key)
    replacement = replacement_from_plain(conflict, content) if keep == "file" else None
    now_ms = int(clock.wall() * 1000) if physical_ms is None else physical_ms
    stamp = HLC.from_packed(max(conflict.local.hlc, conflict.remote.hlc)).now(now_ms)
    return store.resolve(conflict.key, node_key, keep=keep, replacement=replacement,
                         hlc=stamp.packed)


def _decode_conflict(raw: bytes) -> Conflict:
    try:
        return Conflict.from_plain(canonical.decode(raw))
    except (KeyError, TypeError, DecodeError, ValidationError) as exc:
        raise CortexError(f"corrupt conflict record: {exc}") from None
