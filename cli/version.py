"""`gd-node --version`: the release and the exact commit a node runs.

The version comes from git tags through setuptools-scm at install time (a release is a
`vX.Y.Z` tag; between tags it reads `X.Y.Z.devN+g<commit>`). A bug report needs the commit
too, and an editable install's metadata goes stale as commits land, so in a git checkout
the commit is read live from git; an installed copy falls back to the `+g<commit>` that
setuptools-scm put in its version, and a tagged release is its tag.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

import click

DIST_NAME = "gd-node"
# The folder that holds this checkout's .git, if gd-node runs from one.
SOURCE_ROOT = Path(__file__).resolve().parents[1]
GIT_TIMEOUT_S = 2.0
_SCM_NODE = re.compile(r"[+.]g([0-9a-f]{7,40})")

F = TypeVar("F", bound=Callable[..., Any])


def installed_version() -> str:
    """The version pip recorded when gd-node was installed ("unknown" if it was not)."""
    try:
        return version(DIST_NAME)
    except PackageNotFoundError:
        return "unknown"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(SOURCE_ROOT), *args], capture_output=True,
                              text=True, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def current_commit(release: str) -> str:
    """The commit this code is: live from git in a checkout (with "-dirty" when files
    differ from it), else the one setuptools-scm encoded in `release`."""
    if (SOURCE_ROOT / ".git").exists():
        head = _git("rev-parse", "--short=12", "HEAD")
        if head:
            dirty = _git("status", "--porcelain", "--untracked-files=no")
            return f"{head}-dirty" if dirty else head
    match = _SCM_NODE.search(release)
    if match:
        return match.group(1)
    return f"tag v{release}" if release != "unknown" else "unknown"


def version_text() -> str:
    """One line: `gd-node <version> (commit <commit>)`."""
    release = installed_version()
    return f"{DIST_NAME} {release} (commit {current_commit(release)})"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(version_text())
    ctx.exit()


def version_option() -> Callable[[F], F]:
    """An eager `--version` flag that prints `version_text()` and exits."""
    return click.option("--version", is_flag=True, expose_value=False, is_eager=True,
                        callback=_print_version,
                        help="Show the version and the commit, then exit.")
