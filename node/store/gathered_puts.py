"""Received genes written gathered per table inside the receiver's one write transaction
(issue 15, apply path; ADR 0038, following ADR 0033's ingest path).

`SyncStore.apply_batches` applies a group of received batches in one transaction, gene
by gene: read the head, decide, write. Written one by one, each gene's seven records go
into seven B-trees at random keys (ids and version hashes are hashes). Here the writes
are gathered (`GatheredWrites`) and put table by table in key order at `flush`, and the
feed's sequence counter is read and stored once (its entries appended).

Gathered writes are invisible to reads through the transaction, so the one promise this
keeps is that nothing reads a gene's records while its writes are still gathered: the
caller calls `before_read(gene_id)` before it reads a gene, and a gene written since the
last flush is flushed first (a group that names one gene twice sees its first version
as head, exactly as one by one). `_put_gene` reads only the gene's own keys, so genes of
distinct ids never read each other's gathered writes.
"""

from __future__ import annotations

from gd.genome.gene import Gene
from gd.node.store.cortex_genes import CortexGenes
from gd.node.store.gene_records import ChangeSeq
from gd.node.store.lmdb_tables import GatheredWrites, Txn


class GatheredGenePuts:
    """`CortexGenes.put_gene_in(txn, gene, supersede=True)` of many genes, gathered."""

    __slots__ = ("_cortex", "_seq", "_touched", "_txn", "_writes")

    def __init__(self, cortex: CortexGenes, txn: Txn) -> None:
        self._cortex, self._txn = cortex, txn
        dbs = cortex._dbs
        self._seq = ChangeSeq(txn, dbs["meta"])
        self._writes = GatheredWrites(txn, dbs)
        self._touched: set[str] = set()

    def before_read(self, gene_id: str) -> None:
        """Make this gene's gathered writes visible before the caller reads it."""
        if gene_id in self._touched:
            self.flush()

    def put(self, gene: Gene) -> int | None:
        """Store `gene` as its head over anything (a decided version); its feed
        sequence number, or None if exactly this was already stored."""
        self.before_read(gene.id)  # `_put_gene` reads the gene's own records
        self._touched.add(gene.id)
        return self._cortex._put_gene(self._txn, gene, supersede=True, seq=self._seq,
                                      writes=self._writes)

    def flush(self) -> None:
        """Write what is gathered (the transaction then reads it)."""
        self._writes.flush()
        self._touched.clear()

    def close(self) -> None:
        """Flush and store the feed counter: call once, before the transaction commits."""
        self.flush()
        self._seq.store()
