"""Compare two `make bench` summaries (bench/results.json): every numeric value both
report that differs, as old, new and new/old. Rows of a table are named by their case,
metric, setup or measure (reconcile rows by differences and kind), else by position.

    python bench/before-rebuild/compare.py OLD.json NEW.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def flat(value: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(flat(item, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            name: Any = i
            if isinstance(item, dict):
                name = next((item[k] for k in ("case", "metric", "setup", "measure", "kind")
                             if item.get(k) is not None), i)
                if "differences" in item:
                    name = f"{item['differences']}-{item.get('kind')}"
            out.update(flat(item, f"{prefix}[{name}]"))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out[prefix] = float(value)
    return out


def main(old_path: str, new_path: str) -> None:
    old = flat(json.loads(Path(old_path).read_text())["benchmarks"])
    new = flat(json.loads(Path(new_path).read_text())["benchmarks"])
    for key in sorted(set(old) & set(new)):
        if old[key] == new[key]:
            continue
        ratio = new[key] / old[key] if old[key] else float("nan")
        print(f"{key:90s} {old[key]:14.3f} {new[key]:14.3f} {ratio:7.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
