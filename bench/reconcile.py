"""Bytes and rounds of range-based set reconciliation (gd.protocol.reconcile).

Two in-memory sides share N items (HLC stamp, 32-byte version hash) spread over a year
of history and differ by D items, half held only by each side. "recent" differences
were all made in the last hour (the usual case: a peer missed recent edits); "scattered"
ones are spread over the whole year (a restore from an old backup, a policy change).

Baseline, measured in the same run: sending the other side every (stamp, id) pair
(what a naive "here is my whole index" repair costs). `vs_full` is reconciliation bytes
over baseline bytes. `overhead_1.5KB` relates reconciliation bytes to the payload it
leads to: D genes of 1.5 KB each (issue 6's sizing), i.e. what repair adds on top of
moving the missing genes themselves.

    .venv/bin/python bench/reconcile.py [--items 100000] [--repeats 3] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from gd.genome import canonical
from gd.protocol.reconcile import ItemSet, reconcile_in_memory

GENE_BYTES = 1536
YEAR_MS = 365 * 24 * 3600 * 1000
HOUR_MS = 3600 * 1000
T0_MS = 1_700_000_000_000
RESULTS = Path(__file__).parent / "results" / "reconcile.json"


def stamp(ms: int, rng: random.Random) -> int:
    return (ms << 16) | rng.randrange(4)


def items(rng: random.Random, n: int, start_ms: int, span_ms: int) -> list[tuple[int, bytes]]:
    return [(stamp(start_ms + rng.randrange(span_ms), rng), rng.randbytes(32)) for _ in range(n)]


def scenario(common: list[tuple[int, bytes]], diffs: int, kind: str,
             rng: random.Random) -> tuple[ItemSet, ItemSet, set[bytes], set[bytes]]:
    if kind == "recent":
        extra = items(rng, diffs, T0_MS + YEAR_MS, HOUR_MS)
    else:
        extra = items(rng, diffs, T0_MS, YEAR_MS)
    a_only, b_only = extra[: diffs // 2], extra[diffs // 2:]
    return (ItemSet(common + a_only), ItemSet(common + b_only),
            {i for _, i in a_only}, {i for _, i in b_only})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    common = items(rng, args.items, T0_MS, YEAR_MS)
    full_set = ItemSet(common)
    baseline_bytes = len(canonical.encode_plain(
        [[ts for ts, _ in full_set], b"".join(i for _, i in full_set)]))

    rows = []
    cases = [(0, "in-sync")] + [(d, k) for d in (10, 100, 1000) for k in ("recent", "scattered")]
    for diffs, kind in cases:
        if diffs == 0:
            a, b, want_have, want_need = full_set, ItemSet(common), set(), set()
        else:
            a, b, want_have, want_need = scenario(common, diffs, kind, rng)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            have, need, sizes = reconcile_in_memory(a, b)
            times.append(time.perf_counter() - t)
        if (have, need) != (want_have, want_need):
            raise SystemExit(f"reconciliation was wrong for {diffs} {kind}")
        total = sum(sizes)
        rows.append({
            "items": args.items,
            "differences": diffs,
            "kind": kind,
            "round_trips": len(sizes) // 2,
            "bytes": total,
            "bytes_initiator": sum(sizes[0::2]),
            "bytes_responder": sum(sizes[1::2]),
            "largest_message": max(sizes),
            "baseline_full_index_bytes": baseline_bytes,
            "vs_full": total / baseline_bytes,
            "overhead_vs_1.5KB_genes": total / (diffs * GENE_BYTES) if diffs else None,
            "median_s": statistics.median(times),
        })

    header = (f"{'diffs':>6} {'kind':>10} {'RTs':>4} {'bytes':>9} {'largest':>8} "
              f"{'vs_full':>8} {'ovh@1.5KB':>10} {'median_ms':>10}")
    print(f"range-based reconciliation, {args.items} items; baseline (full index) = "
          f"{baseline_bytes} B")
    print(header)
    for r in rows:
        ovh = f"{100 * r['overhead_vs_1.5KB_genes']:.1f}%" if r["differences"] else "-"
        print(f"{r['differences']:>6} {r['kind']:>10} {r['round_trips']:>4} {r['bytes']:>9} "
              f"{r['largest_message']:>8} {100 * r['vs_full']:>7.2f}% {ovh:>10} "
              f"{1000 * r['median_s']:>10.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "reconcile", "seed": args.seed,
                                    "repeats": args.repeats, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
