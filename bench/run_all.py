"""`make bench`: run every benchmark, then gather their JSON into one bench/results.json
and one markdown table, bench/RESULTS.md (which the README links to).

Each benchmark prints its own table and writes bench/results/<name>.json; this script
runs them one after another (never in parallel: they would measure each other), reports
any that fail, and still writes the summary of those that succeeded.

    python bench/run_all.py [--only cortex,ledger] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from goals import table  # noqa: E402

RESULTS = HERE / "results"
# `limits` first: the machine's signature rates, which goals.py sets each row beside.
BENCHMARKS = ("limits", "cortex", "ledger", "motors", "reconcile", "p2p", "sync",
              "sync_processes", "ledger_net", "ledger_vs_etcd", "api")
# Arguments that make a benchmark short enough for a smoke run (`--quick`).
QUICK_ARGS = {"limits": ["--seconds", "0.2", "--trials", "1"], "cortex": ["--genes", "10000"],
              "sync": ["--genes", "2000"], "sync_processes": ["--genes", "2000"]}


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for key in sorted(value):
            out += flatten(value[key], f"{prefix}.{key}" if prefix else str(key))
        return out
    return [(prefix, value)]


def markdown(name: str, data: dict[str, Any]) -> str:
    lines = [f"## {name}", ""]
    rows = data.get("rows")
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        columns = list(dict.fromkeys(k for r in rows for k in r))
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        for row in rows:
            lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    else:
        lines += ["| measure | value |", "|---|---|"]
        for key, value in flatten({k: v for k, v in data.items() if k != "machine"}):
            if not isinstance(value, list):
                lines.append(f"| {key} | {_cell(value)} |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="Comma-separated subset to run.")
    parser.add_argument("--quick", action="store_true", help="Smaller sizes, for a smoke run.")
    args = parser.parse_args()
    chosen = [b for b in BENCHMARKS if not args.only or b in args.only.split(",")]
    failed = []
    for name in chosen:
        script = HERE / f"{name}.py"
        if not script.exists():
            print(f"== {name}: no {script.name}, skipped")
            continue
        print(f"== {name}", flush=True)
        start = time.monotonic()
        extra = QUICK_ARGS.get(name, []) if args.quick else []
        code = subprocess.call([sys.executable, str(script), *extra])
        print(f"== {name}: exit {code} in {time.monotonic() - start:.1f} s", flush=True)
        if code != 0:
            failed.append(name)
    combined: dict[str, Any] = {"machine": {"python": platform.python_version(),
                                            "platform": platform.platform()},
                                "benchmarks": {}}
    sections = ["# Benchmark results", "",
                f"Written by `make bench` on {time.strftime('%Y-%m-%d')} "
                f"({platform.platform()}, Python {platform.python_version()}). Each section "
                "is one script in `bench/`; see its docstring for what it measures and the "
                "baseline it compares against.", "",
                "## Issue 15: each path, its goal, the in-run baseline and the machine's "
                "ceiling", "",
                "The ceiling is the signature work a path may not skip (a received gene "
                "checked once, a ledger statement checked by every voter that holds it, an "
                "imported gene built and signed once), run alone on every core in this "
                "run (`bench/limits.py`).", "",
                table(RESULTS)]
    for name in BENCHMARKS:
        path = RESULTS / f"{name}.json"
        if path.exists():
            data = json.loads(path.read_text())
            combined["benchmarks"][name] = data
            sections.append(markdown(name, data))
    (HERE / "results.json").write_text(json.dumps(combined, indent=2, sort_keys=True))
    (HERE / "RESULTS.md").write_text("\n".join(sections))
    print(table(RESULTS))
    print(f"wrote {HERE / 'results.json'} and {HERE / 'RESULTS.md'}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
