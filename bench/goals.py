"""Issue 15's table: every path with the figure of this run, the goal, the in-run
baseline ratio and the machine's ceiling for the path, read from the benchmarks' JSON in
bench/results/ (run_all prints it and puts it at the top of RESULTS.md). A path no
script measures yet says so.

The ceiling (`ceilings`) is the signature work the path may not skip, run alone on
every core (`bench/limits.py`, same run): a received gene checked once, a statement
checked by each voter holding it, an imported gene built and signed once. A goal above
its ceiling cannot be met on this machine while those checks stay on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# (path, value before issue 15 on the 2-core machine, goal)
PATHS = (
    ("cold sync, 100k genes of ~1.5 KB, 2 nodes over libp2p", "59.7 s", "<= 15 s"),
    ("cold sync, 100k small genes, two gd-node run processes", "92 s", "<= 10 s"),
    ("sign + ingest end to end", "8,451 genes/s", ">= 15,000/s"),
    ("ingest of signed genes", "0.225 of raw", ">= 0.5 of raw"),
    ("ledger, region of one", "3,142 entries/s", ">= 15,000/s"),
    ("ledger, 3 voters", "1,753 entries/s", ">= etcd's puts/s, p99 <= etcd's"),
    ("daemon start to /healthz 200", "~5 s", "< 2 s"),
)


def _load(results: Path, name: str) -> dict[str, Any]:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _row(rows: list[dict[str, Any]], key: str, value: str) -> dict[str, Any] | None:
    return next((r for r in rows if str(r.get(key, "")).startswith(value)), None)


def _solo(net: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The region-of-one row of ledger_net: the process layout's, else the in-process."""
    return _row(net, "setup", "region of one, gd-node run") or _row(net, "setup",
                                                                   "region of one")


def _etcd_txn(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """etcd's row with as many puts a txn as our submissions hold statements."""
    return next((r for r in rows if "a txn" in str(r.get("setup", ""))), None)


def measured(results: Path) -> list[tuple[str, str]]:
    """(this run's figure, in-run baseline ratio) per path of PATHS, in order."""
    out: list[tuple[str, str]] = []
    sync = _load(results, "sync").get("rows", [])
    cold = _row(sync, "case", "cold sync zstd")
    local = _row(sync, "case", "local apply")
    out.append((f"{cold['seconds']:.1f} s ({cold['genes']} genes)", f"{cold['vs_local']} x "
                f"local apply ({local['genes_per_s']} genes/s)") if cold and local
               else ("not run", ""))
    procs = _row(_load(results, "sync_processes").get("rows", []), "case", "cold sync")
    out.append((f"{procs['seconds']:.1f} s ({procs['genes']} genes; both `share` commands "
                f"{procs['share_s']:.1f} s of it)", f"first gene after {procs['first_gene_s']} s")
               if procs else ("not run (bench/sync_processes.py)", ""))
    out += _ingest_rows(_load(results, "cortex"))
    net = _load(results, "ledger_net").get("rows", [])
    solo = _solo(net)
    solo_in = _row(net, "setup", "region of one, in-process")
    out.append((f"{solo['entries_per_s']:,} entries/s, p99 {solo['p99_ms']} ms "
                f"({_layout(solo)})", f"in-process {solo_in['entries_per_s']:,} entries/s"
                if solo_in and solo_in is not solo else "") if solo else ("not run", ""))
    etcd = _load(results, "ledger_vs_etcd").get("rows", [])
    ours = _row(etcd, "setup", "gd ledger")
    theirs = _row(etcd, "setup", "etcd")
    three = _row(net, "setup", "3 voters")
    three_in = _row(net, "setup", "3 voters, in-process")
    if ours and theirs and three:
        inproc = (f"; in-process {three_in['entries_per_s']:,} entries/s"
                  if three_in and three_in is not three else "")
        txn = _etcd_txn(etcd)
        one = _row(etcd, "setup", "gd ledger, 3 voters, one statement")
        many = txn["setup"].split(", ")[2].split(" ")[0] if txn else "batched"
        # Like for like: our batched submissions beside etcd's txns of as many puts, our
        # one-statement submissions beside etcd's single puts.
        like = (f"{many} a request: {ours['throughput_vs_etcd_txn']} x etcd's "
                f"{txn['puts_per_s']:,} puts/s, p99 {ours['p99_vs_etcd_txn']} x its "
                f"{txn['p99_ms']} ms" if txn and "p99_vs_etcd_txn" in ours else
                f"{ours['throughput_vs_etcd']} x etcd's single puts")
        if one:
            like += (f"; one a request: {one['throughput_vs_etcd']} x etcd's "
                     f"{theirs['puts_per_s']:,} single puts/s, p99 {one['p99_vs_etcd']} x "
                     f"its {theirs['p99_ms']} ms")
        single = (f"; one statement a submission: {one['puts_per_s']:,} entries/s, p99 "
                  f"{one['p99_ms']} ms" if one else "")
        out.append((f"{ours['puts_per_s']:,} entries/s, p50 {ours['p50_ms']} ms, p99 "
                    f"{ours['p99_ms']} ms ({_layout(three)}{inproc}){single}", like))
    elif three:
        out.append((f"{three['entries_per_s']:,} entries/s (no etcd in this run)", ""))
    else:
        out.append(("not run", ""))
    p2p = _load(results, "p2p")
    if "process_start_healthz_ms_p50" in p2p:
        out.append((f"{p2p['process_start_healthz_ms_p50'] / 1000:.2f} s (gd-node run process, "
                    "median of 5)", f"bare interpreter {p2p['interpreter_start_ms_p50']:.0f} ms"
                    f", daemon imports alone {p2p['process_import_ms']:.0f} ms"))
    else:
        out.append(("not run", ""))
    return out


def _ingest_rows(cortex: dict[str, Any]) -> list[tuple[str, str]]:
    """The two ingest paths. Sign + ingest is given at `genes import`'s own transaction
    size (what a user's import does) beside the benchmark's --batch; the ratio to raw
    puts at --batch, beside the import size's (bigger transactions help a bare put
    more than our seven records a gene, so that ratio is lower)."""
    rows = cortex.get("rows", [])
    batch = cortex.get("batch", "?")
    e2e = _row(rows, "metric", "sign + ingest")
    ingest = _row(rows, "metric", "ingest signed")
    raw = _row(rows, "metric", "baseline: raw")
    e2e_big = _row(rows, "metric", "import batch: sign + ingest")
    ingest_big = _row(rows, "metric", "import batch: ingest")
    if e2e is None or ingest is None or raw is None:
        return [("not run", ""), ("not run", "")]
    if e2e_big is not None:
        size = e2e_big["metric"].split(", ")[1].split(" a ")[0]
        first = (f"{e2e_big['value']:,.0f} genes/s at `genes import`'s {size} a transaction "
                 f"({e2e['value']:,.0f} at {batch})",
                 f"{e2e_big['vs_baseline']:.3f} of raw puts at {size}; "
                 f"{e2e['vs_baseline']:.3f} at {batch}")
    else:
        first = (f"{e2e['value']:,.0f} genes/s ({batch} a transaction)",
                 f"{e2e['vs_baseline']:.3f} of raw puts")
    second_now = f"{ingest['vs_baseline']:.3f} of raw ({batch} a transaction)"
    if ingest_big is not None:
        second_now += (f"; {ingest_big['vs_baseline']:.3f} at {size} "
                       f"({ingest_big['value']:,.0f} genes/s)")
    return [first, (second_now, f"raw LMDB {raw['value']:,.0f} puts/s at {batch}")]


def _layout(row: dict[str, Any]) -> str:
    """Where the nodes of a ledger_net row ran."""
    return "each node its own process" if "gd-node run" in str(row.get("setup")) \
        else "nodes in one process"


def ceilings(results: Path) -> list[str]:
    """Per path of PATHS, in order: the machine's ceiling for it and where this run
    stands against it ("not measured" without bench/limits.py's results)."""
    limits = _load(results, "limits").get("rows", [])
    verify_gene = _row(limits, "operation", "verify gene")
    verify_stmt = _row(limits, "operation", "verify statement")
    sync = _row(_load(results, "sync").get("rows", []), "case", "cold sync zstd")
    procs = _row(_load(results, "sync_processes").get("rows", []), "case", "cold sync")
    out = [_sync_ceiling(sync, verify_gene), _sync_ceiling(procs, verify_gene)]
    cortex = _load(results, "cortex").get("rows", [])
    build_sign = _row(cortex, "metric", "build + sign genes,")
    e2e = (_row(cortex, "metric", "import batch: sign + ingest")
           or _row(cortex, "metric", "sign + ingest"))
    out.append(f"{build_sign['value']:,.0f} genes/s: building and signing alone, on every "
               f"core; this run {e2e['value'] / build_sign['value']:.2f} of it"
               if build_sign and e2e else "not measured")
    ingest = _row(cortex, "metric", "ingest signed")
    out.append(f"1.0 of raw: the same puts and nothing else; this run "
               f"{ingest['vs_baseline']:.3f}" if ingest else "not measured")
    net = _load(results, "ledger_net").get("rows", [])
    solo = _solo(net)
    three = _row(net, "setup", "3 voters")
    if verify_stmt:
        cap = verify_stmt["all_cores_per_s"]
        cores = verify_stmt["cores"]
        out.append(f"{cap:,} entries/s: each statement checked once, on {cores} cores"
                   + (f"; this run {solo['entries_per_s'] / cap:.2f} of it" if solo else ""))
        third = cap / 3
        etcd = _etcd_txn(_load(results, "ledger_vs_etcd").get("rows", []))
        text = (f"{third:,.0f} entries/s: each statement checked by all 3 voters, on "
                f"{cores} cores" + (f"; this run {three['entries_per_s'] / third:.2f} of it"
                                    if three else ""))
        if etcd:
            text += (f"; etcd's {etcd['puts_per_s']:,} puts/s (it checks no signature) is "
                     f"{etcd['puts_per_s'] / third:.2f} x this ceiling")
        out.append(text)
    else:
        out += ["not measured (bench/limits.py)"] * 2
    out.append("none below the imports (met)")
    return out


def _sync_ceiling(row: dict[str, Any] | None, verify: dict[str, Any] | None) -> str:
    """A cold sync's ceiling: each of its genes checked once, on every core."""
    if row is None or verify is None:
        return "not measured"
    floor = row["genes"] / verify["all_cores_per_s"]
    return (f"{floor:.1f} s: {row['genes']:,} gene checks on {verify['cores']} cores "
            f"({verify['all_cores_per_s']:,}/s); this run {row['seconds'] / floor:.1f} x it")


def table(results: Path) -> str:
    """The markdown table (also fine on a terminal)."""
    lines = ["| path | before | this run | goal | in-run baseline | ceiling here |",
             "|---|---|---|---|---|---|"]
    for (path, before, goal), (now, base), ceiling in zip(
            PATHS, measured(results), ceilings(results), strict=True):
        lines.append(f"| {path} | {before} | {now} | {goal} | {base} | {ceiling} |")
    return "\n".join(lines) + "\n"
