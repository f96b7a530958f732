"""Ledger benchmark, local parts: durable batched appends, `verify`, proofs at 1M leaves.

    .venv/bin/python bench/ledger.py [--entries 100000] [--leaves 1000000] [--seed 9162]

Prints a table and writes bench/results/ledger.json. Each measurement is the median of
--repeats runs; every ratio is against a baseline measured in the same run:

* append: entries/s through `Ledger.append_batch` into a fresh LMDB environment opened
  with sync=True (each batch is one fsync'd commit, signature checks included), for batch
  sizes 1..1000; baseline = batches of 1.
* verify: entries/s of `Ledger.verify()` over --entries entries (decode, links, Ed25519,
  idempotency index, tree nodes, signed heads); baseline = bare Ed25519 verification of
  the same entries, the floor of any verifier.
* proofs: audit path and consistency proof size, generation and verification time on an
  in-memory tree of --leaves leaves, and on the LMDB ledger of --entries entries;
  baseline = recomputing the root from every leaf (what a proof saves a verifier).

The Raft numbers (commit rate and latency through 3 voters over libp2p, failover) need
the node wiring and live in the network benchmark.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb

from gd.genome.canonical import sha256
from gd.genome.identity import NodeKey, verify
from gd.ledger.entry import EntryKind, LedgerEntry
from gd.ledger.merkle import (
    MemoryNodeStore,
    MerkleTree,
    leaf_hash,
    root_of_leaves,
    verify_consistency,
    verify_inclusion,
)
from gd.node.store.ledger_store import Ledger

RESULTS = Path(__file__).parent / "results" / "ledger.json"
BATCH_SIZES = (1, 10, 100, 1000)
PROOF_SAMPLES = 1000


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_statements(count: int, seed: int) -> list[LedgerEntry]:
    keys = [NodeKey.from_seed(sha256(f"bench-author-{seed}-{i}".encode())) for i in range(3)]
    rng = random.Random(seed)
    return [LedgerEntry.create(keys[i % 3], EntryKind.DECISION, (1 << 20) + i,
                               sha256(rng.randbytes(32)),
                               {"verdict": "accept", "cp": round(rng.random(), 4),
                                "domain": "turbofan"})
            for i in range(count)]


def open_env(path: Path) -> lmdb.Environment:
    return lmdb.open(str(path), max_dbs=64, map_size=8 << 30, sync=True)


def bench_appends(statements: list[LedgerEntry], repeats: int, head_key: NodeKey,
                  workdir: Path) -> list[dict[str, Any]]:
    rows = []
    for batch in BATCH_SIZES:
        # Enough entries for a stable number; batches of one are one fsync each.
        count = min(len(statements), max(200, batch * 20))
        chunk = statements[:count]
        runs = itertools.count()

        def once(batch: int = batch, chunk: list[LedgerEntry] = chunk,
                 runs: itertools.count[int] = runs) -> None:
            env = open_env(workdir / f"append-{batch}-{next(runs)}")
            try:
                ledger = Ledger(env)
                for start in range(0, len(chunk), batch):
                    ledger.append_batch(chunk[start:start + batch], head_key=head_key,
                                        timestamp=start)
            finally:
                env.close()

        seconds = median_time(once, repeats)
        rows.append({"batch": batch, "entries": count, "seconds": seconds,
                     "entries_per_s": count / seconds})
    base = rows[0]["entries_per_s"]
    for row in rows:
        row["ratio_vs_batch_1"] = row["entries_per_s"] / base
    return rows


def bench_verify(statements: list[LedgerEntry], repeats: int, head_key: NodeKey,
                 workdir: Path) -> tuple[dict[str, Any], Ledger, lmdb.Environment]:
    env = open_env(workdir / "verify")
    ledger = Ledger(env)
    start = time.perf_counter()
    for i in range(0, len(statements), 1000):
        ledger.append_batch(statements[i:i + 1000], head_key=head_key, timestamp=i)
    build = time.perf_counter() - start
    report = ledger.verify()
    assert report.ok, report.reason
    seconds = median_time(lambda: ledger.verify(), repeats)
    triples = [(e.author, e.statement_bytes(), e.signature) for e in statements]
    floor = median_time(lambda: [verify(*t) for t in triples], repeats)
    n = len(statements)
    return ({"entries": n, "build_seconds": build, "seconds": seconds,
             "entries_per_s": n / seconds, "ed25519_only_per_s": n / floor,
             "ratio_vs_ed25519_only": (n / seconds) / (n / floor),
             "heads_checked": report.heads_checked}, ledger, env)


def bench_proofs(tree: MerkleTree, rng: random.Random, leaves: list[bytes],
                 repeats: int, label: str) -> dict[str, Any]:
    n = tree.size
    root = tree.root()
    indices = [rng.randrange(n) for _ in range(PROOF_SAMPLES)]
    olds = [rng.randrange(1, n) for _ in range(PROOF_SAMPLES)]
    old_roots = {m: tree.root(m) for m in olds}
    inclusion = [tree.inclusion_proof(i) for i in indices]
    consistency = [tree.consistency_proof(m) for m in olds]
    gen_inc = median_time(lambda: [tree.inclusion_proof(i) for i in indices], repeats)
    ver_inc = median_time(lambda: [verify_inclusion(leaves[p.index], p.index, n, p.path, root)
                                   for p in inclusion], repeats)
    gen_con = median_time(lambda: [tree.consistency_proof(m) for m in olds], repeats)
    ver_con = median_time(lambda: [verify_consistency(p.old_size, n, old_roots[p.old_size],
                                                      root, p.path) for p in consistency],
                          repeats)
    full = median_time(lambda: root_of_leaves(leaves), 1)
    inc_len = [len(p.path) for p in inclusion]
    con_len = [len(p.path) for p in consistency]
    per = 1e6 / PROOF_SAMPLES
    return {
        "tree": label, "leaves": n,
        "inclusion_hashes_max": max(inc_len), "inclusion_bytes_max": 32 * max(inc_len),
        "inclusion_hashes_median": statistics.median(inc_len),
        "inclusion_generate_us": gen_inc * per, "inclusion_verify_us": ver_inc * per,
        "consistency_hashes_max": max(con_len), "consistency_bytes_max": 32 * max(con_len),
        "consistency_hashes_median": statistics.median(con_len),
        "consistency_generate_us": gen_con * per, "consistency_verify_us": ver_con * per,
        "full_root_recompute_ms": full * 1e3,
        "ratio_full_recompute_vs_inclusion_verify": full / (ver_inc / PROOF_SAMPLES),
    }


class _LedgerTreeView:
    """Adapts a `Ledger` to the few tree calls `bench_proofs` makes."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.size = ledger.size

    def root(self, size: int | None = None) -> bytes:
        return self.ledger.root(size)

    def inclusion_proof(self, index: int) -> Any:
        return self.ledger.inclusion_proof(index)

    def consistency_proof(self, old: int) -> Any:
        return self.ledger.consistency_proof(old)


def _filesystem(path: Path) -> str:
    """The filesystem type under `path` (from /proc/mounts): fsync costs differ a lot."""
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    resolved = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3 and resolved.startswith(parts[1]) and len(parts[1]) > len(best):
            best, kind = parts[1], parts[2]
    return kind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=9162)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--dir", type=Path, default=None,
                        help="Where the LMDB files go (fsync cost depends on this disk).")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    head_key = NodeKey.from_seed(sha256(f"bench-leader-{args.seed}".encode()))

    t0 = time.perf_counter()
    statements = make_statements(args.entries, args.seed)
    sign_rate = args.entries / (time.perf_counter() - t0)

    with tempfile.TemporaryDirectory(prefix="gd-bench-ledger-", dir=args.dir) as tmp:
        filesystem = _filesystem(Path(tmp))
        workdir = Path(tmp)
        appends = bench_appends(statements, args.repeats, head_key, workdir)
        verify_row, ledger, env = bench_verify(statements, max(1, args.repeats - 1), head_key,
                                               workdir)
        try:
            lmdb_leaves = [ledger.leaf_hash(i) for i in range(ledger.size)]
            lmdb_proofs = bench_proofs(_LedgerTreeView(ledger), rng,  # type: ignore[arg-type]
                                       lmdb_leaves, args.repeats, "lmdb")
        finally:
            env.close()

    t0 = time.perf_counter()
    leaves = [leaf_hash(i.to_bytes(8, "big")) for i in range(args.leaves)]
    tree = MerkleTree(MemoryNodeStore())
    for leaf in leaves:
        tree.append(leaf)
    build_rate = args.leaves / (time.perf_counter() - t0)
    memory_proofs = bench_proofs(tree, rng, leaves, args.repeats, "memory")

    results = {
        "benchmark": "ledger", "seed": args.seed, "repeats": args.repeats,
        "python": platform.python_version(), "machine": platform.machine(),
        "lmdb_filesystem": filesystem, "lmdb_sync": True,
        "sign_entries_per_s": sign_rate, "appends": appends, "verify": verify_row,
        "merkle_append_leaves_per_s": build_rate, "proofs": [memory_proofs, lmdb_proofs],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"\nwritten to {args.out}")
    return 0


def print_table(r: dict[str, Any]) -> None:
    print(f"LMDB on {r['lmdb_filesystem']} (sync=True)")
    print(f"signing: {r['sign_entries_per_s']:,.0f} entries/s;  in-memory Merkle append: "
          f"{r['merkle_append_leaves_per_s']:,.0f} leaves/s\n")
    print(f"{'append batch':>12} {'entries':>8} {'entries/s':>11} {'vs batch 1':>10}")
    for row in r["appends"]:
        print(f"{row['batch']:>12} {row['entries']:>8} {row['entries_per_s']:>11,.0f} "
              f"{row['ratio_vs_batch_1']:>9.1f}x")
    v = r["verify"]
    print(f"\nverify {v['entries']:,} entries: {v['entries_per_s']:,.0f} entries/s "
          f"({v['seconds']:.2f} s; bare Ed25519 {v['ed25519_only_per_s']:,.0f}/s, "
          f"ratio {v['ratio_vs_ed25519_only']:.2f})\n")
    print(f"{'tree':>7} {'leaves':>9} {'incl hashes':>11} {'gen us':>8} {'verify us':>9} "
          f"{'cons hashes':>11} {'gen us':>8} {'verify us':>9} {'full root ms':>12}")
    for p in r["proofs"]:
        print(f"{p['tree']:>7} {p['leaves']:>9,} {p['inclusion_hashes_max']:>11} "
              f"{p['inclusion_generate_us']:>8.1f} {p['inclusion_verify_us']:>9.1f} "
              f"{p['consistency_hashes_max']:>11} {p['consistency_generate_us']:>8.1f} "
              f"{p['consistency_verify_us']:>9.1f} {p['full_root_recompute_ms']:>12.1f}")


if __name__ == "__main__":
    sys.exit(main())
