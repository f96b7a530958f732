"""Cortex benchmark: ingest of signed genes, get-by-id latency, domain scan rate.

Baseline measured in the same run: raw LMDB puts of the same encoded bytes (one put per
gene, same batching, no indexes), so the ratio shows what our indexes, change feed and
validation cost on top of the storage engine itself.

    python bench/cortex.py [--genes 100000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lmdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, percentile, report

from gd.genome import Codon, Gene, NodeKey
from gd.node.app.importer import import_genes
from gd.node.services.verify_pool import default_workers
from gd.node.store.cortex import Cortex

DOMAINS = ("turbofan", "loan", "supply", "energy")


def gene_args(n: int) -> list[tuple[int, str, float, str, float]]:
    rng = random.Random(7)
    return [(i, f"s{rng.randint(1, 21)}", rng.uniform(0, 100), f"s{rng.randint(1, 21)}",
             rng.uniform(0, 100)) for i in range(n)]


def build(key: NodeKey, args: list[tuple[int, str, float, str, float]]) -> list[Gene]:
    return [Gene.create(key, domain=DOMAINS[i % len(DOMAINS)], name=f"rule-{i}",
                        codons=[Codon.simple(f1, ">", t1), Codon.simple(f2, "<=", t2)],
                        action="inspect", purpose="benchmark rule", hlc=i << 16)
            for i, f1, t1, f2, t2 in args]


def make_genes(key: NodeKey, n: int, workers: int = 1) -> list[Gene]:
    """The benchmark's genes, built and signed on `workers` threads (as `genes import`
    does: pynacl signs without the GIL). Same genes whatever `workers`."""
    args = gene_args(n)
    if workers == 1:
        return build(key, args)
    size = -(-n // workers)
    with ThreadPoolExecutor(workers) as pool:
        parts = pool.map(lambda lo: build(key, args[lo:lo + size]), range(0, n, size))
        return [g for part in parts for g in part]


def import_file(path: Path, genes: list[Gene]) -> None:
    """The genes as `genes import` JSONL lines (all in the turbofan pack, whose features
    s1..s21 and action they use, so the pack check accepts every line)."""
    with path.open("w") as f:
        for g in genes:
            f.write(json.dumps({"domain": "turbofan", "name": g.name, "action": g.action,
                                "purpose": g.purpose,
                                "codons": [c.to_plain() for c in g.codons]}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--genes", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--reads", type=int, default=20_000)
    parser.add_argument("--import-genes", type=int, default=20_000,
                        help="lines in the `genes import` file")
    args = parser.parse_args()
    key = NodeKey.from_seed(bytes(32))
    n, batch = args.genes, args.batch
    rows = []

    workers = default_workers()
    start = time.perf_counter()
    genes = make_genes(key, n)
    serial_s = time.perf_counter() - start
    rows.append({"metric": "baseline: build + sign genes, 1 thread", "value": n / serial_s,
                 "unit": "genes/s"})
    start = time.perf_counter()
    parallel = make_genes(key, n, workers)
    sign_s = time.perf_counter() - start
    assert [g.wire_bytes for g in parallel[:100]] == [g.wire_bytes for g in genes[:100]]
    del parallel
    rows.append({"metric": f"build + sign genes, {workers} threads", "value": n / sign_s,
                 "unit": "genes/s", "vs_baseline": serial_s / sign_s})

    with tempfile.TemporaryDirectory() as tmp:
        env = lmdb.open(str(Path(tmp) / "raw"), map_size=1 << 32, max_dbs=4, writemap=True)
        raw_db = env.open_db(b"raw")
        blobs = [(g.id.encode(), g.encode()) for g in genes]
        start = time.perf_counter()
        for i in range(0, n, batch):
            with env.begin(write=True) as txn:
                for k, v in blobs[i:i + batch]:
                    txn.put(k, v, db=raw_db)
        raw_s = time.perf_counter() - start
        env.close()
        rows.append({"metric": "baseline: raw LMDB put of encoded genes", "value": n / raw_s,
                     "unit": "genes/s"})

        cortex = Cortex.open(Path(tmp) / "cortex", map_size=1 << 32)
        start = time.perf_counter()
        for i in range(0, n, batch):
            cortex.put_genes(genes[i:i + batch])
        ingest_s = time.perf_counter() - start
        rows.append({"metric": "ingest signed genes (indexes + feed)", "value": n / ingest_s,
                     "unit": "genes/s", "vs_baseline": raw_s / ingest_s})
        rows.append({"metric": "sign + ingest end to end", "value": n / (sign_s + ingest_s),
                     "unit": "genes/s", "vs_baseline": raw_s / (sign_s + ingest_s)})
        source = Path(tmp) / "genes.jsonl"
        import_file(source, genes[:args.import_genes])
        with Cortex.open(Path(tmp) / "imported", map_size=1 << 32) as target:
            start = time.perf_counter()
            report_ = import_genes(target, key, source, batch_size=batch)
            import_s = time.perf_counter() - start
        if report_.added != min(n, args.import_genes):
            raise SystemExit(f"genes import refused lines: {report_.rejected[:3]}")
        rows.append({"metric": "genes import of a JSONL file (parse, check, sign, store)",
                     "value": report_.added / import_s, "unit": "genes/s"})

        rng = random.Random(11)
        ids = [genes[rng.randrange(n)].id for _ in range(args.reads)]
        lat = []
        for gid in ids:
            t0 = time.perf_counter()
            cortex.get_gene(gid)
            lat.append(time.perf_counter() - t0)
        rows.append({"metric": "get_gene p50", "value": median(lat) * 1e6, "unit": "µs"})
        rows.append({"metric": "get_gene p99", "value": percentile(lat, 99) * 1e6, "unit": "µs"})

        start = time.perf_counter()
        scanned = sum(1 for _ in cortex.genes(domain="turbofan"))
        scan_s = time.perf_counter() - start
        rows.append({"metric": "domain scan (decoded genes)", "value": scanned / scan_s,
                     "unit": "genes/s"})
        start = time.perf_counter()
        verified = 0
        for gene in cortex.genes(domain="loan"):
            gene.verify()
            verified += 1
        rows.append({"metric": "domain scan + signature verify",
                     "value": verified / (time.perf_counter() - start), "unit": "genes/s"})
        size = cortex.stats().size_bytes
        cortex.close()
        rows.append({"metric": "cortex size per gene", "value": size / n, "unit": "bytes"})
    report("cortex", rows, {"genes": n, "batch": batch, "sign_threads": workers})


if __name__ == "__main__":
    main()
