"""The ingest loop of a batch of new genes (`CortexGenes.put_genes`; issue 15, ADR 0041).

Kept beside the Cortex's gene module, not in it: this is the per-gene cost of ingest,
written as one tight loop, and the gene module holds the store's operations (the record format is
`gene_records.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgpack

from gd.node.gc_tuning import batch_gc
from gd.node.store.gene_records import BODY_KEY, ChangeSeq, GeneVersion
from gd.node.store.lmdb_tables import SEP, U64, GatheredWrites, Txn

if TYPE_CHECKING:
    from gd.node.store.cortex_genes import CortexGenes


def put_new_genes(cortex: CortexGenes, txn: Txn, batch: list[GeneVersion],
                  seq: ChangeSeq, w: GatheredWrites) -> list[int | None]:
    """`CortexGenes._put_gene` of each gene of a batch of distinct ids, for what an import batch
    mostly holds: a gene this Cortex has no head of (so no body either: a body is keyed by
    the head's index number). Its seven records (and its new index number) are gathered
    straight into the tables' lists, encoded by one packer (same bytes as `head_record`
    and `change_record`: `tests/cortex/test_batch_writes.py`); the loop's lookups are
    bound once per batch, since this is the per-gene cost of ingest. Anything else takes
    the general path."""
    d = cortex._dbs
    get, genes_db = txn.get, d["genes"]
    # New genes take growing index numbers, so their bodies append (ADR 0062).
    versions, by_vhash, heads = (w.appended("gene_versions"), w.items("by_vhash"),
                                 w.items("genes"))
    by_domain, by_status, by_origin = (w.items("idx_domain"), w.items("idx_status"),
                                       w.items("idx_origin"))
    changes = w.appended("changes")
    pack = msgpack.Packer(use_bin_type=True).pack  # = canonical.encode_plain
    u64, body = U64.pack, BODY_KEY.pack
    out: list[int | None] = []
    # The loop allocates a few tuples per record, acyclic and dropped once the batch is
    # written: no young-generation collections while it runs (`batch_gc`, issue 15).
    with batch_gc():
        for gene in batch:
            gid = gene.id.encode()
            version = gene.version
            if get(gid, db=genes_db) is not None:
                out.append(cortex._put_gene(txn, gene, seq=seq, writes=w))
                continue
            status, domain, origin = str(gene.status), gene.domain, gene.origin
            vhash = gene.version_hash
            iseq = seq.next_index()
            bkey = body(iseq, version)
            versions.append((bkey, gene.wire_bytes))
            by_vhash.append((vhash, bkey))
            heads.append((gid, pack([version, status, gene.successes, gene.failures,
                                     domain, origin, iseq])))
            # Index numbers grow, so each index's new keys land at the end of their
            # value's range (ADR 0060).
            inumber = u64(iseq)
            by_domain.append((domain.encode() + SEP + inumber, gid))
            by_status.append((status.encode() + SEP + inumber, gid))
            by_origin.append((origin.encode() + SEP + inumber, gid))
            number = seq.next()
            changes.append((u64(number), pack({"id": gene.id, "kind": "gene", "op": "put",
                                               "version": version, "vhash": vhash})))
            out.append(number)
    return out

