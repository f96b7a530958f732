"""The Cortex's genes: versions, heads, indexes, the change feed and peer checkpoints.

The invariants (DESIGN.md):

* **One write, one transaction.** A gene, its version record, its hash lookup, its three
  index entries and its change-feed entry are written in the same LMDB transaction, so a
  crash (even SIGKILL mid-batch) leaves all of them or none.
* **Nothing is silently overwritten.** A second, different body for an existing
  (gene id, version) is a `VersionConflict`; sync decides what to do with concurrent
  versions (conflict queue), the store never picks one for it.
* **The change feed is the sync source.** Every stored gene version or deletion gets the
  next sequence number; peers resume from the last number they applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from gd.genome import canonical
from gd.genome.errors import DecodeError, ValidationError
from gd.genome.gene import Gene, GeneStatus
from gd.node.store.cortex_env import (
    SCHEMA_VERSION,
    CortexEnv,
    CortexError,
    UnknownGene,
    VersionConflict,
    must_get,
)
from gd.node.store.gene_records import (
    BODY_KEY,
    CHANGE_SEQ_KEY,
    INDEX_SEQ_KEY,
    INDEX_TABLES,
    Change,
    ChangeSeq,
    GeneVersion,
    Head,
    Layout,
    body_key,
    change_record,
    head_record,
    index_gene,
    index_keys,
    indexed_ids,
    unindex_gene,
)
from gd.node.store.lmdb_tables import (
    SEP,
    U64,
    GatheredWrites,
    TableWrites,
    Txn,
    get_u64,
    join_key,
    prefix_keys,
)
from gd.node.store.new_gene_batch import put_new_genes


class CortexGenes(CortexEnv):
    """Genes and their change feed (the part of `Cortex` that sync reads and writes)."""

    _CURRENT = Layout(SCHEMA_VERSION)

    def _layout(self, txn: Txn) -> Layout:
        """The layout `txn` reads (`Layout`): a writer has upgraded, so the current one."""
        return Layout.of(txn, self._dbs["meta"]) if self.readonly else self._CURRENT

    # -- genes ------------------------------------------------------------------
    def put_gene(self, gene: Gene) -> int | None:
        """Store one gene version as the gene's head. Returns its change-feed sequence
        number, or None if this exact version and local state were already stored."""
        return self.put_genes([gene])[0]

    def put_genes(self, genes: Iterable[GeneVersion]) -> list[int | None]:
        """Store a batch in ONE transaction (all or nothing); see `put_gene`.

        When every gene of the batch has its own id (an import batch, a bench batch),
        no gene reads what another writes, so the writes are gathered and put table by
        table in key order (`GatheredWrites`): the same records as gene-by-gene puts, in a
        fraction of the B-tree work. A batch naming one id twice is stored in order."""
        batch = list(genes)
        distinct = len({g.id for g in batch}) == len(batch)

        def run(txn: Txn) -> list[int | None]:
            # The change counter is read once and written once per batch, and the feed's
            # keys only grow, so they are appended (no B-tree search per gene).
            seq = ChangeSeq(txn, self._dbs["meta"])
            if not distinct:
                direct = TableWrites(txn, self._dbs)
                out = [self._put_gene(txn, g, seq=seq, writes=direct) for g in batch]
            else:
                gathered = GatheredWrites(txn, self._dbs)
                out = put_new_genes(self, txn, batch, seq, gathered)
                gathered.flush()
            seq.store()
            return out

        return self.write(run)

    def put_gene_in(self, txn: Txn, gene: Gene, *,
                    supersede: bool = False) -> int | None:
        """`put_gene` inside the caller's write transaction (sync applies a batch and its
        checkpoint together). `supersede=True` makes `gene` the head even over a higher
        version number and replaces a different body stored under the same (id, version)
        — only for a decided last-writer-wins, where the losing concurrent version is
        meant to disappear."""
        return self._put_gene(txn, gene, supersede=supersede)

    def get_gene_in(self, txn: Txn, gene_id: str) -> Gene | None:
        gid = gene_id.encode()
        raw = txn.get(gid, db=self._dbs["genes"])
        return self._load(txn, gid, raw) if raw is not None else None

    def set_checkpoint_in(self, txn: Txn, peer_id: str, seq: int) -> None:
        txn.put(peer_id.encode(), U64.pack(seq), db=self._dbs["checkpoints"])

    def _put_gene(self, txn: Txn, gene: GeneVersion, *, supersede: bool = False,
                  seq: ChangeSeq | None = None,
                  writes: TableWrites | None = None) -> int | None:
        # Reads go to `txn`; writes through `writes` (straight to `txn` unless a batch
        # gathers them). Only this gene's own keys are read, so a gathered batch of
        # distinct ids reads what a gene-by-gene batch would. A batch passes its counters
        # (`seq`) and stores them once; a lone gene reads and stores its own.
        if seq is not None:
            return self._put_gene_counted(txn, gene, supersede, seq, writes, batch=True)
        counters = ChangeSeq(txn, self._dbs["meta"])
        out = self._put_gene_counted(txn, gene, supersede, counters, writes, batch=False)
        counters.store()
        return out

    def _put_gene_counted(self, txn: Txn, gene: GeneVersion, supersede: bool,
                          seq: ChangeSeq, writes: TableWrites | None, *,
                          batch: bool) -> int | None:
        d = self._dbs
        w = writes if writes is not None else TableWrites(txn, d)
        gid = gene.id.encode()
        old_raw = txn.get(gid, db=d["genes"])
        old = Head.decode(old_raw) if old_raw is not None else None
        # A gene's number comes with its first head and keys its bodies (ADR 0062).
        iseq = old.iseq if old is not None else seq.next_index()
        vkey = body_key(iseq, gene.version)
        wire = gene.wire_bytes
        existing = txn.get(vkey, db=d["gene_versions"]) if old is not None else None
        if existing is not None and existing != wire:
            if not supersede:
                raise VersionConflict(
                    f"gene {gene.id} version {gene.version} already exists with another body")
            loser = Gene.from_stored(canonical.decode(existing), raw=existing)
            w.delete("by_vhash", loser.version_hash)
            existing = None
        new_version = existing is None
        if new_version:
            # A new gene's number is above every stored one: a batch appends its body.
            w.put("gene_versions", vkey, wire, append=batch and old is None)
            w.put("by_vhash", gene.version_hash, vkey)
        values = (gene.domain, str(gene.status), gene.origin)
        if old is None:
            w.put("genes", gid, head_record(gene, iseq))
            index_gene(w, gid, iseq, *values)
            return self._append_change(w, "put", gene, seq, append=batch)
        head = head_record(gene, iseq)
        if old_raw == head:
            # The head record names no body: a superseded body under the same
            # version leaves it equal, but the version changed, and the feed must say
            # so (peers and the repair items follow the feed; fedsim seed 3151).
            return self._append_change(w, "put", gene, seq, append=batch) if new_version else None
        if old.version > gene.version and not supersede:
            # An older version arriving late is kept in history, not made head.
            return self._append_change(w, "put", gene, seq, append=batch) if new_version else None
        w.put("genes", gid, head)
        if old.index_values() != values:
            unindex_gene(w, old.iseq, *old.index_values())
            index_gene(w, gid, old.iseq, *values)
        if not new_version:
            # Only local state changed: nothing to sync, except a gene that became native
            # (a person approved it): only native genes are shared, so peers that skipped
            # it while it was pending must see it in the feed again.
            approved = old.status != "native" and gene.status is GeneStatus.NATIVE
            return self._append_change(w, "put", gene, seq, append=batch) if approved else None
        return self._append_change(w, "put", gene, seq, append=batch)

    def _load(self, txn: Txn, gene_id: bytes, head_raw: bytes, *,
              validate: bool = False) -> Gene:
        """The full Gene for a head record (signed body joined with local state). Our own
        records are rebuilt without re-validation (`Gene.from_stored`) unless `validate`."""
        head = Head.decode(head_raw)
        raw = txn.get(self._layout(txn).body_key(gene_id, head.iseq, head.version),
                      db=self._dbs["gene_versions"])
        if raw is None:
            raise CortexError(f"gene {gene_id.decode()}: head version {head.version} missing")
        if validate:
            return Gene.from_wire(canonical.decode(raw), status=GeneStatus(head.status),
                                  successes=head.successes, failures=head.failures)
        return Gene.from_stored(canonical.decode(raw), raw=raw, status=head.status,
                                successes=head.successes, failures=head.failures)

    def _append_change(self, w: TableWrites, op: str, gene: GeneVersion, seq: ChangeSeq,
                       *, append: bool) -> int:
        # A batch's feed keys only grow, so they are appended; a lone change puts without
        # `append`, as it always did.
        number = seq.next()
        w.put("changes", U64.pack(number), change_record(op, gene), append=append)
        return number

    def get_gene(self, gene_id: str) -> Gene | None:
        gid = gene_id.encode()
        with self.env.begin() as txn:
            raw = txn.get(gid, db=self._dbs["genes"])
            return self._load(txn, gid, raw) if raw is not None else None

    def head_statuses(self, versions: Sequence[tuple[str, bytes]]) -> list[str | None]:
        """Per (gene id, version hash): the status if that version is the head, else
        None; one read, no gene built (auto-adapt on receive, issue 15)."""
        out: list[str | None] = []
        with self.env.begin() as txn:
            layout = self._layout(txn)
            for gene_id, vhash in versions:
                gid = gene_id.encode()
                raw = txn.get(gid, db=self._dbs["genes"])
                head = Head.decode(raw) if raw is not None else None
                out.append(head.status if head is not None and txn.get(
                    vhash, db=self._dbs["by_vhash"]) == layout.body_key(
                        gid, head.iseq, head.version) else None)
        return out

    def heads(self, gene_ids: Sequence[str]) -> list[Head | None]:
        """Each gene's head record (version, status, domain, origin; None where absent),
        all in one read and no gene built: what a watcher of the feed needs to know of
        each change (the API's event stream, issue 15)."""
        genes = self._dbs["genes"]
        with self.env.begin() as txn:
            raws = [txn.get(gene_id.encode(), db=genes) for gene_id in gene_ids]
        return [Head.decode(raw) if raw is not None else None for raw in raws]

    def require_gene(self, gene_id: str) -> Gene:
        gene = self.get_gene(gene_id)
        if gene is None:
            raise UnknownGene(f"no gene {gene_id!r} in this Cortex")
        return gene

    def get_gene_version(self, gene_id: str, version: int) -> Gene | None:
        """A stored version's signed body, with the gene's current status (the status is
        the gene's, not the version's: what a sender's policy must judge) and counters
        at zero."""
        gid = gene_id.encode()
        with self.env.begin() as txn:
            raw_head = txn.get(gid, db=self._dbs["genes"])
            if raw_head is None:
                return None  # every body is a headed gene's (`delete_gene` takes both)
            head = Head.decode(raw_head)
            raw = txn.get(self._layout(txn).body_key(gid, head.iseq, version),
                          db=self._dbs["gene_versions"])
        return None if raw is None else self.version_of(raw, head)

    def feed_page(self, seq: int, limit: int) -> list[tuple[Change, bytes | None, Head | None]]:
        """`changes_since`, each entry with its stored version's bytes and the gene's head
        (None where absent), all read in ONE transaction: a sync sender reads its feed
        this way (one snapshot per page, not two transactions per gene) and decodes a
        version only when it gets to it (`version_of`). The head is decoded here, once:
        its index number finds the body, its status goes with the version."""
        with self.env.begin() as txn:
            layout = self._layout(txn)
            versions, heads = self._dbs["gene_versions"], self._dbs["genes"]
            out: list[tuple[Change, bytes | None, Head | None]] = []
            for c in self._changes_in(txn, seq, limit):
                gid = c.id.encode()
                raw_head = txn.get(gid, db=heads) if c.op == "put" else None
                if raw_head is None:
                    out.append((c, None, None))  # a tombstone, or a gene since deleted
                    continue
                head = Head.decode(raw_head)
                key = layout.body_key(gid, head.iseq, c.version)
                out.append((c, txn.get(key, db=versions), head))
            return out

    @staticmethod
    def version_of(raw: bytes, head: Head | None) -> Gene:
        """A version's stored bytes as `get_gene_version` returns them (the gene's status,
        counters at zero)."""
        status = head.status if head is not None else GeneStatus.NATIVE
        return Gene.from_stored(canonical.decode(raw), raw=raw, status=status)

    def gene_versions(self, gene_id: str) -> list[int]:
        gid = gene_id.encode()
        with self.env.begin() as txn:
            head = txn.get(gid, db=self._dbs["genes"])
            if head is None:
                return []
            prefix = self._layout(txn).body_prefix(gid, Head.decode(head).iseq)
            return [U64.unpack(k[len(prefix):])[0]
                    for k in prefix_keys(txn, self._dbs["gene_versions"], prefix)]

    def next_version(self, gene_id: str) -> int:
        """One above every version of the gene this Cortex holds (1 for a new gene): the
        number a local edit must take (see `Gene.edited`)."""
        versions = self.gene_versions(gene_id)
        return (max(versions) if versions else 0) + 1

    def get_by_version_hash(self, vhash: bytes) -> Gene | None:
        with self.env.begin() as txn:
            vkey = txn.get(vhash, db=self._dbs["by_vhash"])
            raw = txn.get(vkey, db=self._dbs["gene_versions"]) if vkey else None
        return Gene.from_stored(canonical.decode(raw), raw=raw) if raw is not None else None

    def delete_gene(self, gene_id: str,
                    also: Callable[[Txn, Gene], object] | None = None) -> int | None:
        """Remove a gene, all its stored versions, indexes and synapses; append a
        tombstone to the change feed. Returns the tombstone's sequence, None if absent.
        `also(txn, gene)` writes more in the same transaction (the audit record of an
        honoured tombstone: the deletion and its record commit together)."""

        def run(txn: Txn) -> int | None:
            d = self._dbs
            raw = txn.get(gene_id.encode(), db=d["genes"])
            if raw is None:
                return None
            gene = self._load(txn, gene_id.encode(), raw)
            head = Head.decode(raw)
            unindex_gene(TableWrites(txn, d), head.iseq, *head.index_values())
            txn.delete(gene_id.encode(), db=d["genes"])
            bodies = self._layout(txn).body_prefix(gene_id.encode(), head.iseq)
            for key in list(prefix_keys(txn, d["gene_versions"], bodies)):
                stored = must_get(txn, d["gene_versions"], key, "gene version")
                body = Gene.from_stored(canonical.decode(stored), raw=stored)
                txn.delete(body.version_hash, db=d["by_vhash"])
                txn.delete(key, db=d["gene_versions"])
            prefix = gene_id.encode() + SEP
            for fwd, rev in (("synapses", "synapses_rev"), ("synapses_rev", "synapses")):
                for key in list(prefix_keys(txn, d[fwd], prefix)):
                    _, kind, other = key.split(SEP)
                    txn.delete(key, db=d[fwd])
                    txn.delete(join_key(other, kind, gene_id.encode()), db=d[rev])
            if also is not None:
                also(txn, gene)
            counters = ChangeSeq(txn, d["meta"])
            number = self._append_change(TableWrites(txn, d), "delete", gene, counters,
                                         append=False)
            counters.store()
            return number

        return self.write(run)

    def set_status(self, gene_id: str, status: GeneStatus | str) -> Gene:
        """Change a gene's local status (approve, reject, retire...), index included."""
        status = GeneStatus(status)

        def run(txn: Txn) -> Gene:
            raw = txn.get(gene_id.encode(), db=self._dbs["genes"])
            if raw is None:
                raise UnknownGene(f"no gene {gene_id!r} in this Cortex")
            old = self._load(txn, gene_id.encode(), raw)
            new = old.with_local(status=status)
            w = TableWrites(txn, self._dbs)
            gid = gene_id.encode()
            head = Head.decode(raw)
            unindex_gene(w, head.iseq, *head.index_values())
            w.put("genes", gid, head_record(new, head.iseq))
            index_gene(w, gid, head.iseq, new.domain, str(new.status), new.origin)
            return new

        return self.write(run)

    def genes(self, *, domain: str | None = None, status: GeneStatus | str | None = None,
              origin: str | None = None) -> Iterator[Gene]:
        """Head versions, filtered; uses the most selective index given. Reads in one
        snapshot (a consistent view even while the daemon writes)."""
        filters = [("idx_domain", domain), ("idx_status", status and str(status)),
                   ("idx_origin", origin)]
        chosen = [(db, v) for db, v in filters if v is not None]
        with self.env.begin() as txn:
            genes_db = self._dbs["genes"]
            if not chosen:
                for gid, raw in txn.cursor(db=genes_db):
                    yield self._load(txn, gid, raw)
                return
            db, value = chosen[0]
            by_number = self._layout(txn).indexes_by_number
            for gid in indexed_ids(txn, self._dbs[db], value.encode() + SEP, by_number):
                gene = self._load(txn, gid, must_get(txn, genes_db, gid, "gene"))
                if ((domain is None or gene.domain == domain)
                        and (status is None or gene.status == status)
                        and (origin is None or gene.origin == origin)):
                    yield gene

    def gene_ids(self, *, domain: str | None = None) -> list[str]:
        with self.env.begin() as txn:
            if domain is None:
                return [k.decode() for k, _ in txn.cursor(db=self._dbs["genes"])]
            by_number = self._layout(txn).indexes_by_number
            return [gid.decode() for gid in indexed_ids(
                txn, self._dbs["idx_domain"], domain.encode() + SEP, by_number)]

    # -- change feed -------------------------------------------------------------
    def changes_since(self, seq: int, limit: int = 1000) -> list[Change]:
        """Feed entries with sequence > `seq`, oldest first, at most `limit`."""
        with self.env.begin() as txn:
            return self._changes_in(txn, seq, limit)

    def _changes_in(self, txn: Txn, seq: int, limit: int) -> list[Change]:
        out: list[Change] = []
        cur = txn.cursor(db=self._dbs["changes"])
        if not cur.set_range(U64.pack(seq + 1)):
            return out
        for key, raw in cur:
            data = canonical.decode(raw)
            out.append(Change(U64.unpack(key)[0], data["kind"], data["op"], data["id"],
                              data["version"], data["vhash"]))
            if len(out) >= limit:
                break
        return out

    @property
    def last_seq(self) -> int:
        with self.env.begin() as txn:
            return get_u64(txn, self._dbs["meta"], CHANGE_SEQ_KEY)

    def get_checkpoint(self, peer_id: str) -> int:
        with self.env.begin() as txn:
            return get_u64(txn, self._dbs["checkpoints"], peer_id.encode())

    def set_checkpoint(self, peer_id: str, seq: int) -> None:
        self.write(lambda txn: self.set_checkpoint_in(txn, peer_id, seq))

    def check_indexes(self) -> list[str]:
        """Every inconsistency between heads, versions and indexes (empty when sound).
        Used by tests and by `gd-node status --check`."""
        d = self._dbs
        problems: list[str] = []
        with self.env.begin() as txn:
            layout = self._layout(txn)
            by_number = layout.indexes_by_number
            expected: dict[str, dict[bytes, bytes]] = {name: {} for name in INDEX_TABLES}
            numbers: dict[int, bytes] = {}
            for key, raw in txn.cursor(db=d["genes"]):
                try:
                    gene = self._load(txn, key, raw, validate=True)
                    iseq = Head.decode(raw).iseq
                except (DecodeError, ValidationError, CortexError) as exc:
                    problems.append(f"gene {key!r}: undecodable head: {exc}")
                    continue
                if by_number:
                    if iseq < 1:
                        problems.append(f"gene {gene.id}: head has no index number")
                    elif iseq in numbers:
                        problems.append(f"gene {gene.id}: index number {iseq} is also "
                                        f"{numbers[iseq].decode()}'s")
                    numbers[iseq] = key
                    for name, ikey in index_keys(iseq, gene.domain, str(gene.status),
                                                 gene.origin):
                        expected[name][ikey] = key
                else:
                    for name, value in zip(INDEX_TABLES, (gene.domain, str(gene.status),
                                                          gene.origin), strict=True):
                        expected[name][join_key(value, gene.id)] = b""
                if txn.get(gene.version_hash, db=d["by_vhash"]) != layout.body_key(
                        key, iseq, gene.version):
                    problems.append(f"gene {gene.id}: version hash does not name its body")
            if layout.bodies_by_number:
                for bkey in txn.cursor(db=d["gene_versions"]).iternext(values=False):
                    if len(bkey) != BODY_KEY.size or U64.unpack(bkey[:8])[0] not in numbers:
                        problems.append(f"gene_versions: body {bkey!r} belongs to no gene")
            if by_number and numbers and max(numbers) > get_u64(txn, d["meta"], INDEX_SEQ_KEY):
                problems.append(f"meta: index_seq is below index number {max(numbers)}")
            for name, records in expected.items():
                actual = dict(txn.cursor(db=d[name]))
                for missing in sorted(records.keys() - actual.keys()):
                    problems.append(f"{name}: missing {missing!r}")
                for extra in sorted(actual.keys() - records.keys()):
                    problems.append(f"{name}: stale {extra!r}")
                for key in sorted(records.keys() & actual.keys()):
                    if records[key] != actual[key]:
                        problems.append(f"{name}: {key!r} names {actual[key]!r}, "
                                        f"not {records[key]!r}")
        return problems
