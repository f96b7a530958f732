"""mypy plugin: check the `gd.*` namespace when mypy is given the repository's folders.

setuptools maps `gd.node` to `node/` (package-dir, ADR 0001), which mypy cannot express:
it names a file on its command line after its folders, so `mypy node` checks
`node/daemon.py` as `node.daemon`, while the code imports `gd.node.daemon`. The shim
`tools/typecheck/gd/` (on `mypy_path`) links each folder under its `gd.` name, so those
imports resolve; this plugin then makes every command-line module pull in its `gd.` twin,
so each file is checked once under the name the code really uses (pyproject.toml ignores
the errors of the folder-named copies; ADR 0009). The folder to package map is read
from pyproject.toml, so a package added there is covered once its link exists.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from mypy.nodes import MypyFile
from mypy.plugin import Plugin

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

# mypy.build's priority for an ordinary top-level import.
IMPORT_PRIORITY = 10


def folder_to_package(pyproject: Path = PYPROJECT) -> dict[str, str]:
    """Map each top-level folder to the `gd.` package setuptools installs it as."""
    with pyproject.open("rb") as fh:
        package_dir: dict[str, str] = tomllib.load(fh)["tool"]["setuptools"]["package-dir"]
    return {folder: package for package, folder in package_dir.items()}


class GdNamespacePlugin(Plugin):
    """Adds `gd.<pkg>.<mod>` as a dependency of each `<folder>.<mod>` mypy was given."""

    folders = folder_to_package()

    def get_additional_deps(self, file: MypyFile) -> list[tuple[int, str, int]]:
        """Return the `gd.` twin of a folder-named module, so that twin is checked too."""
        top, _, rest = file.fullname.partition(".")
        package = self.folders.get(top)
        if package is None:
            return []
        twin = f"{package}.{rest}" if rest else package
        return [(IMPORT_PRIORITY, twin, -1)]


def plugin(version: str) -> type[Plugin]:
    """mypy's entry point: the plugin class (it works with every mypy 1.x and 2.x)."""
    return GdNamespacePlugin
