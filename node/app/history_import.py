"""`experiences import`: back-test genes on a domain's historical record (issue 14).

The domain pack reads the file with its own loader and labels every row per action
(`DomainPack.history`: C-MAPSS run-to-failure rows by their remaining useful life, BPI
2017 applications by their outcome). For each gene, the rows where its condition fires
are the states in which it would have acted; each becomes an experience labelled with
whether its action reached its purpose there. So M_P starts from the record, not from a
coin flip, and other genes of the domain with the same action learn from it too
(`gd.node.app.decisions.domain_history`).

Provenance: each experience's note names the file's SHA-256 and its row; the import as
a whole is one ledger entry (kind `experience`) whose summary gives the file hash, the
rows read, the genes and the experiences recorded. Importing the same file for the same
gene again records nothing new (the note prefix is found) and no second ledger entry is made.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from gd.genome import Experience, Gene, canonical
from gd.genome.gene import GeneStatus
from gd.ledger.entry import EntryKind
from gd.motors.backend import get_backend
from gd.motors.condition import compile_gene, fires
from gd.motors.domains import get_domain
from gd.motors.domains.pack import HistoricalRecord
from gd.node.app.decisions import DecisionError
from gd.node.clock import hlc_now
from gd.node.local import LocalNode
from gd.node.services.recorder import LedgerRecorder

# Experiences kept per gene and import: an even spread over the rows where it fires.
# 2,000 cover a C-MAPSS training file's late-life states densely (k = 32 neighbours)
# while one gene's evidence stays ~1 MB and loads in milliseconds.
MAX_PER_GENE: Final = 2000
NOTE_PREFIX: Final = "history "
HASH_CHARS: Final = 16


@dataclass(frozen=True)
class GeneImport:
    gene_id: str
    name: str
    action: str
    fired: int          # rows where the gene's condition holds
    recorded: int       # experiences recorded now
    successes: int
    skipped: bool = False   # this file was imported for this gene before


@dataclass(frozen=True)
class HistoryImport:
    path: str
    sha256: str
    domain: str
    rows: int
    rule: str
    genes: tuple[GeneImport, ...] = field(default_factory=tuple)
    ledger: str = ""    # receipt status of the ledger entry

    @property
    def recorded(self) -> int:
        return sum(g.recorded for g in self.genes)

    def to_plain(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "domain": self.domain,
                "rows": self.rows, "rule": self.rule, "recorded": self.recorded,
                "ledger": self.ledger,
                "genes": [g.__dict__ for g in self.genes]}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise DecisionError(f"cannot read {path}: {exc.strerror}") from None
    return digest.hexdigest()


def _targets(node: LocalNode, gene_id: str | None, domain: str | None) -> tuple[str, list[Gene]]:
    if (gene_id is None) == (domain is None):
        raise DecisionError("give exactly one of a gene and a domain")
    if gene_id is not None:
        gene = node.cortex.require_gene(gene_id)
        return gene.domain, [gene]
    assert domain is not None
    get_domain(domain)
    genes = sorted(node.cortex.genes(domain=domain, status=GeneStatus.NATIVE),
                   key=lambda g: g.id)
    if not genes:
        raise DecisionError(f"no native genes in domain {domain!r} to back-test")
    return domain, genes


def back_test(gene: Gene, record: HistoricalRecord, limit: int = MAX_PER_GENE
              ) -> tuple[np.ndarray, np.ndarray]:
    """(rows, labels): the rows where `gene` fires (an even spread of at most `limit`)
    and whether its action reached its purpose in each."""
    pack = get_domain(gene.domain)
    if gene.action not in record.labels:
        raise DecisionError(f"the record has no outcome for action {gene.action!r}")
    bk = get_backend("numpy")
    on = np.flatnonzero(np.asarray(fires(bk, compile_gene(gene, pack), record.X)))
    if len(on) > limit:
        on = on[np.linspace(0, len(on) - 1, limit).round().astype(np.int64)]
    return on, np.asarray(record.labels[gene.action])[on]


def import_history(node: LocalNode, path: Path, *, gene_id: str | None = None,
                   domain: str | None = None, limit: int = MAX_PER_GENE) -> HistoryImport:
    """Back-test the gene (or every native gene of the domain) on the record in `path`
    and record the labelled experiences in one transaction, then one ledger entry."""
    dom, genes = _targets(node, gene_id, domain)
    sha = file_sha256(path)
    pack = get_domain(dom)
    record = pack.history(path)
    states = pack.states(record.X, entities=list(record.entities), times=list(record.times))
    tag = f"{NOTE_PREFIX}{sha[:HASH_CHARS]}"
    stamp = hlc_now()
    new: list[Experience] = []
    report: list[GeneImport] = []
    for gene in genes:
        rows, labels = back_test(gene, record, limit)
        if any(e.note.startswith(tag) for e in node.cortex.experiences_for(gene.id)):
            report.append(GeneImport(gene.id, gene.name, gene.action, len(rows), 0, 0, True))
            continue
        version = gene.version_hash.hex()
        new += [Experience(gene.id, version, states[int(r)], bool(y), stamp + k,
                           node.key.peer_id, note=f"{tag} row {int(r) + 1}")
                for k, (r, y) in enumerate(zip(rows, labels, strict=True))]
        report.append(GeneImport(gene.id, gene.name, gene.action, len(rows), len(rows),
                                 int(np.sum(labels))))
    if not new:
        return HistoryImport(str(path), sha, dom, len(record.X), record.rule, tuple(report),
                             "nothing new")
    node.cortex.add_experiences(new)
    summary = {"import": sha[:HASH_CHARS], "domain": dom, "rows": len(record.X),
               "genes": len(genes), "experiences": len(new)}
    payload = canonical.sha256(canonical.encode({
        "sha256": sha, "genes": [g.id for g in genes], "experiences": [e.id for e in new]}))
    receipt = LedgerRecorder(node.cortex.env, node.key).append(EntryKind.EXPERIENCE, payload,
                                                               summary)
    return HistoryImport(str(path), sha, dom, len(record.X), record.rule, tuple(report),
                         str(getattr(receipt, "status", "recorded")))
