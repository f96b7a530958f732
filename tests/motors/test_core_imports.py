"""The motors are a computing core (DESIGN.md): no database, event loop or network in
them. Checked on the source, so a new `import lmdb` under motors/ fails here at once."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = ("lmdb", "trio", "libp2p")
MOTORS = Path(__file__).resolve().parents[2] / "motors"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_no_motor_module_imports_a_store_a_loop_or_the_network() -> None:
    files = sorted(MOTORS.rglob("*.py"))
    assert len(files) > 10          # the scan sees the package, not an empty folder
    offenders = {str(p.relative_to(MOTORS)): sorted(_imports(p) & set(FORBIDDEN))
                 for p in files if _imports(p) & set(FORBIDDEN)}
    assert offenders == {}


def test_no_motor_module_is_over_500_lines() -> None:
    long = {p.name: n for p in MOTORS.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}
