"""Branch coverage per package, and a floor under each (run by `make test`).

coverage.py reports per file and one total; the seed's promise (80 %) is per package, so
this folds `coverage json` into one line per top-level package (statements and branches
together, as coverage.py counts its total) and exits 1 when a package falls below its
floor. Floors sit just under what the suite measured, so a change that drops tests or adds
untested code fails `make test`; raise a floor when coverage rises, never lower one to
make a change pass (docs/adr/0009-typecheck-coverage-versions.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

# Measured by the whole `make test` on the 2-core VM (2026-12-06, 1,225 tests, the Raft
# simulation outside coverage): cli 88.1, crdt 97.3, genome 92.1, ledger 92.0, motors
# 92.4, node 87.8, protocol 94.2, testnet 92.3 (%). Each floor sits about 2 points under,
# and none under the seed's 80.
FLOORS: dict[str, float] = {
    "genome": 90.0,
    "crdt": 95.0,
    "ledger": 90.0,
    "motors": 90.0,
    "protocol": 92.0,
    "node": 86.0,
    "cli": 86.0,
    "testnet": 90.0,
}


@dataclass
class Tally:
    """Covered and total statements and branches of one package."""

    covered: int = 0
    total: int = 0

    @property
    def percent(self) -> float:
        return 100.0 * self.covered / self.total if self.total else 100.0


def tally(report: dict[str, object]) -> dict[str, Tally]:
    """Fold a `coverage json` report into per-package tallies (keyed by top folder)."""
    files = report.get("files")
    if not isinstance(files, dict):
        raise ValueError("not a coverage.py JSON report (no 'files')")
    out: dict[str, Tally] = {}
    for path, entry in files.items():
        package = Path(path).parts[0]
        summary = entry["summary"]
        t = out.setdefault(package, Tally())
        t.covered += summary["covered_lines"] + summary.get("covered_branches", 0)
        t.total += summary["num_statements"] + summary.get("num_branches", 0)
    return out


def check(tallies: dict[str, Tally], floors: dict[str, float]) -> list[str]:
    """One message per package below its floor, or whose floor is missing."""
    problems = []
    for package, t in sorted(tallies.items()):
        floor = floors.get(package)
        if floor is None:
            problems.append(f"{package}: no coverage floor set (add it to FLOORS)")
        elif t.percent < floor:
            problems.append(f"{package}: {t.percent:.1f}% is below its floor of {floor:.1f}%")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Print the per-package table; exit 1 when a package is under its floor."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the output of `coverage json`")
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.report.read_text())
        tallies = tally(report)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"coverage floor: cannot read {args.report}: {exc}", file=sys.stderr)
        return 2
    print(f"{'package':<10} {'covered':>8} {'of':>7} {'branch cov':>10} {'floor':>6}")
    for package, t in sorted(tallies.items()):
        floor = FLOORS.get(package)
        shown = f"{floor:.1f}" if floor is not None else "-"
        print(f"{package:<10} {t.covered:>8} {t.total:>7} {t.percent:>9.1f}% {shown:>6}")
    problems = check(tallies, FLOORS)
    for problem in problems:
        print(f"coverage floor: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
