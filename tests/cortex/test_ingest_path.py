"""The ingest path (issue 15): genes signed on all cores, one change counter per batch,
wire bytes built around the body bytes already signed. Same results as the serial path."""

from __future__ import annotations

import json
from pathlib import Path

from gd.genome import canonical
from gd.genome.gene import Codon, Gene
from gd.genome.identity import NodeKey
from gd.node.app.importer import import_genes
from gd.node.store.cortex import Cortex

KEY = NodeKey.from_seed(bytes(range(32)))


def line(i: int, threshold: float = 40.0) -> dict:
    return {"domain": "turbofan", "name": f"rule-{i}",
            "codons": [{"feature": "s11", "op": ">", "threshold": threshold + i}],
            "action": "inspect", "params": {}, "purpose": "bench"}


def write(path: Path, rows: list[dict | str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_wire_bytes_are_the_canonical_encoding_of_the_wire_map():
    for i in range(50):
        gene = Gene.create(KEY, domain="turbofan", name=f"g{i}",
                           codons=[Codon.simple("s11", ">", i + 0.5)], action="inspect",
                           purpose="p" * i, hlc=i)
        plain = {"body": gene.body(), "sig": gene.signature}
        assert gene.wire_bytes == canonical.encode_plain(plain)
        assert gene.signing_bytes == canonical.encode(gene.body())
        gene.verify()
        again = Gene.from_wire(canonical.decode(gene.wire_bytes))
        assert again.wire_bytes == gene.wire_bytes and again.version_hash == gene.version_hash


def test_parallel_import_stores_what_the_serial_import_stores(tmp_path):
    rows: list[dict | str] = [line(i) for i in range(300)]
    rows[17] = dict(line(17), action="no-such-action")
    rows[200] = "{not json"
    rows.append(line(5, threshold=99.0))  # a later line edits a gene of the same batch
    source = write(tmp_path / "genes.jsonl", rows)
    stored = {}
    for workers in (1, 2, 4):
        with Cortex.open(tmp_path / f"c{workers}") as cortex:
            done: list[int] = []
            report = import_genes(cortex, KEY, source, batch_size=64, workers=workers,
                                  progress=done.append)
            assert (report.added, report.updated, report.unchanged) == (298, 1, 0)
            assert [n for n, _ in report.rejected] == [18, 201]
            assert done[-1] == len(rows)
            genes = {g.id: g for g in cortex.genes()}
            for gene in genes.values():
                gene.verify()
            stored[workers] = {gid: (g.version, g.signing_bytes) for gid, g in genes.items()}
            # The feed numbers every stored version once, in order, with no gap.
            seqs = [c.seq for c in cortex.changes_since(0, limit=10_000)]
            assert seqs == list(range(1, 300)) and cortex.last_seq == 299
            assert cortex.check_indexes() == []
            # A write outside a batch continues the same counter.
            cortex.put_gene(Gene.create(KEY, domain="turbofan", name="single",
                                        codons=[Codon.simple("s11", ">", 1.0)],
                                        action="inspect"))
            assert cortex.last_seq == 300
            assert [c.seq for c in cortex.changes_since(299)] == [300]
            again = import_genes(cortex, KEY, source, batch_size=64, workers=workers)
            # rule-5 appears twice with different bodies: each line is a new version.
            assert (again.added, again.updated, again.unchanged) == (0, 2, 297)
    # Same genes, versions and signed bodies whatever the number of workers (the clock
    # stamp differs between runs, so compare the bodies without it).
    def strip(signing: bytes) -> dict:
        body = canonical.decode(signing)
        body.pop("hlc")
        return body

    views = [{gid: (v, strip(b)) for gid, (v, b) in stored[w].items()} for w in (1, 2, 4)]
    assert views[0] == views[1] == views[2]
    assert stored[1][next(iter(stored[1]))][0] in (1, 2)


def test_a_sign_pool_worker_produces_the_bytes_gene_create_produces():
    """What a worker ships back for a line is exactly what the in-process path would
    store for it (same stamp), and it refuses what `parse_line` refuses, alike."""
    from gd.node.app import sign_pool
    from gd.node.app.import_lines import parse_line

    texts = [json.dumps(line(i)).encode() for i in range(20)]
    texts[3] = json.dumps(dict(line(3), action="no-such-action")).encode()
    texts[7] = b"{not json"
    with_synapse = dict(line(9), synapses=[{"target": "rule-1"}])
    texts[9] = json.dumps(with_synapse).encode()
    jobs = [(n + 1, text, 5000 + n) for n, text in enumerate(texts)]
    results = sign_pool.sign_lines(KEY, jobs)
    assert len(results) == len(jobs)
    for (number, text, stamp), result in zip(jobs, results, strict=True):
        spec = parse_line(number, text)
        if isinstance(spec, tuple):
            assert result == spec  # same line number and message
            continue
        assert isinstance(result, sign_pool.SignedLine) and result.line == number
        gene = Gene.create(KEY, domain=spec.domain, name=spec.name, codons=spec.codons,
                           action=spec.action, params=spec.params, purpose=spec.purpose,
                           hlc=stamp)
        assert (result.id, result.domain, result.origin) == (gene.id, gene.domain, gene.origin)
        assert result.wire_bytes == gene.wire_bytes
        assert result.version_hash == gene.version_hash
        assert result.has_synapses == (number == 10)
    assert [r[0] for r in results if not isinstance(r, sign_pool.SignedLine)] == [4, 8]
