"""Shared CLI plumbing: consoles, JSON output, and turning errors into exit codes.

Exit codes: 0 success, 1 the operation failed (bad file, unknown gene, locked home...),
2 the command line itself was wrong (click's usage errors). No error shows a Python
traceback: a known user error prints its reason, and an unexpected exception (a bug to
report) prints one line naming it, with the traceback only under `gd-node --debug` or
`GD_DEBUG=1` (`GuardedGroup`).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gd.genome.errors import DecodeError, SignatureError, ValidationError
from gd.ledger.errors import LedgerError
from gd.motors.errors import CheckpointError, MotorInputError
from gd.node.config import ConfigError
from gd.node.control import ControlError
from gd.node.errors import BootstrapError, HostError
from gd.node.home import Home
from gd.node.jsonable import json_default
from gd.node.local import HomeError
from gd.node.lock import AlreadyRunning
from gd.node.net.denylist import DenyListError
from gd.node.store.cortex import CortexError

console = Console()
err_console = Console(stderr=True)

USER_ERRORS: tuple[type[BaseException], ...] = (
    ValidationError, DecodeError, SignatureError, CortexError, ConfigError, HomeError,
    AlreadyRunning, ControlError, BootstrapError, HostError, MotorInputError,
    CheckpointError, DenyListError, FileNotFoundError, PermissionError, IsADirectoryError,
    LedgerError,
)
# Environment switch for `--debug`: show the traceback of an unexpected error.
DEBUG_ENV = "GD_DEBUG"

F = TypeVar("F", bound=Callable[..., Any])


class Failure(click.ClickException):
    """An operation failed for a reason the user can act on (exit code 1)."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        err_console.print(f"[bold red]error:[/] {escape(self.format_message())}", highlight=False,
                          soft_wrap=True)


def user_errors_with(*extra: type[BaseException]) -> Callable[[F], F]:
    """A decorator turning the known user-facing exceptions, plus `extra` (a command
    module's own), into a clean `Failure` (exit code 1, reason on stderr)."""
    errors = USER_ERRORS + extra

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except errors as exc:
                raise Failure(str(exc) or type(exc).__name__) from None

        return wrapper  # type: ignore[return-value]

    return decorate


user_errors = user_errors_with()


def debug_wanted(ctx: click.Context | None) -> bool:
    """`gd-node --debug ...` or GD_DEBUG set to anything but empty/0/false."""
    root = ctx.find_root() if ctx is not None else None
    if root is not None and root.params.get("debug"):
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def describe_unexpected(exc: BaseException) -> str:
    """One line for an exception no command expected: its type and first message line."""
    text = str(exc).strip().splitlines()
    reason = text[0] if text else "(no message)"
    return (f"unexpected {type(exc).__name__}: {reason} (a bug; run again with --debug or "
            f"{DEBUG_ENV}=1 for the traceback)")


class GuardedGroup(click.Group):
    """The root command group: whatever a subcommand raises that click does not handle
    becomes a one-line error and exit code 1, never a traceback (a user reading a stack
    trace cannot tell a bug from their own mistake). `--debug` / GD_DEBUG re-raises.

    It also holds *lazy* commands (`add_lazy_command`): named here, imported when click
    first asks for one (to run it, or to list it in `--help`). The motors' commands are
    lazy, so `gd-node run` and every other command start without numpy and the motors
    (~0.2 s; issue 15, ADR 0063)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, str] = {}  # command name -> "module:attribute"

    def add_lazy_command(self, name: str, target: str) -> None:
        """Mount the command `target` ("module:attribute") under `name`, unimported."""
        self.lazy[name] = target

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy.get(cmd_name)
        if target is not None and cmd_name not in self.commands:
            module, _, attribute = target.partition(":")
            command = getattr(importlib.import_module(module), attribute)
            if not isinstance(command, click.Command) or command.name != cmd_name:
                raise TypeError(f"lazy command {cmd_name!r}: {target} is not that command")
            self.add_command(command)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Abort,
                click.exceptions.Exit, SystemExit, KeyboardInterrupt, EOFError):
            raise
        except BrokenPipeError:
            # The reader went away (`gd-node genes list | head`): not a bug. click's
            # main() quiets stdout and exits 1 on EPIPE, as `ls | head` would end.
            raise
        except Exception as exc:
            if debug_wanted(ctx):
                raise
            raise Failure(describe_unexpected(exc)) from None


def home_option(fn: F) -> F:
    """`--home DIR` (default `$GD_HOME`, else ~/.gd-node), resolved into a `Home`."""
    return click.option(
        "--home", "home", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Node home directory (default: $GD_HOME, else ~/.gd-node).",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print machine-readable JSON instead of tables.")(fn)


def node_command(*errors: type[BaseException], with_json: bool = True) -> Callable[[F], F]:
    """`--home`, `--json` and clean failures (the known user errors plus `errors`): the
    options every command on a node's home takes, in one decorator, so that a command
    module names its own errors once (`ledger_command = node_command(LedgerError)`)
    instead of stacking the same three decorators on every command. `with_json=False`
    for the commands whose output is a file format of its own (exports)."""
    def decorate(fn: F) -> F:
        guarded = user_errors_with(*errors)(fn)
        return home_option(json_option(guarded) if with_json else guarded)

    return decorate


def emit(data: Any, as_json: bool, text: str) -> None:
    """The end of most commands: `data` as JSON under --json, else one line of `text`
    (rich markup allowed)."""
    if as_json:
        print_json(data)
    else:
        console.print(text)


def print_rows(rows: Sequence[Any], as_json: bool, title: str, columns: Iterable[str],
               cells: Callable[[Any], Iterable[str]]) -> None:
    """A listing: `rows` as JSON under --json, else a `fold_table` with `cells(row)` for
    each row (the one shape of every `... list` command)."""
    if as_json:
        print_json(rows)
        return
    table = fold_table(title, columns)
    for row in rows:
        table.add_row(*cells(row))
    console.print(table)


def fold_table(title: str, columns: Iterable[str]) -> Table:
    """A listing's table: every column folds long values (ids, keys, conditions) rather
    than cutting them, since a cut id cannot be pasted into the next command."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, overflow="fold")
    return table


def resolve_home(home: Path | None) -> Home:
    return Home.resolve(home)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=json_default))


