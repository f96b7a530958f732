"""What the motors' commands share: constants, error handling and decision tables.

The commands are `gd.cli.evaluate_cmds` (evaluate, adapt), `gd.cli.experiences_cmds`
and `gd.cli.decisions_cmds`; `gd.cli.motors_cmds` lists them for the main group.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from rich.markup import escape
from rich.table import Table

from gd.cli.naming import is_wide
from gd.cli.output import console, node_command
from gd.genome import Decision
from gd.motors import meristic
from gd.motors.errors import CheckpointError, MotorInputError
from gd.motors.evaluate import EvaluationRequest
from gd.node.app import decisions as dec
from gd.node.app.states_file import StatesFileError

# A terminal table of thousands of rows helps nobody; the summary line counts them all
# and --json (or `decisions export`) gives every one.
MAX_TABLE_ROWS: Final = 200
# Decision ids as tables show them: 12 hex digits (48 bits) are unique among millions of
# decisions; the full id is in --json and `decisions show`.
SHORT_ID: Final = 12
SEED_MAX: Final = 2**64 - 1
# Exit status of a command stopped by SIGINT (128 + signal number), as shells report it.
EXIT_INTERRUPTED: Final = 130
DEFAULTS: Final = EvaluationRequest()
SEARCH: Final = meristic.SearchConfig()
MOTOR_ERRORS: Final = (MotorInputError, CheckpointError, dec.DecisionError, StatesFileError)

# --home, --json, and the motors' errors as clean failures: every motors command.
motor_command = node_command(*MOTOR_ERRORS)

def score_cell(decision: Decision, motor: str) -> str:
    r = decision.result(motor)
    if r is None:
        return "[dim]-[/]"
    return f"[bold red]{r.score:.3f}✗[/]" if r.veto else f"{r.score:.3f}"


def verdict_cell(decision: Decision) -> str:
    colour = {"approve": "green", "veto": "red", "adapt": "yellow",
              "needs-evidence": "cyan"}.get(decision.verdict, "")
    return f"[{colour}]{decision.verdict}[/]" if colour else decision.verdict


def where(decision: Decision, row: int | None = None) -> str:
    """Which state a decision is about: entity@t, or the states file's row number when
    the file had neither an entity nor a time column (every t would read 0)."""
    if len(decision.states) != 1:
        return f"{len(decision.states)} states"
    s = decision.states[0]
    if s.entity:
        return f"{s.entity}@{s.t}"
    return f"row {row}" if row is not None and s.t == 0 else str(s.t)


def unlabelled(decisions: list[Decision]) -> bool:
    return all(not s.entity and s.t == 0 for d in decisions for s in d.states)


def when(stamp: int) -> str:
    """An HLC stamp (ms in the top 48 bits) as UTC time; anything else as the number."""
    ms = stamp >> 16
    if 10**12 <= ms < 10**14:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(stamp)


def decisions_table(title: str, decisions: list[Decision], *, numbered: bool = False
                     ) -> Table:
    """Scores per decision; ids shortened to SHORT_ID characters (every command taking a
    decision id accepts a unique prefix) so the table fits a terminal."""
    # Each motor's score only where the terminal has room; ids and scores are never cut
    # (issue 13, item 9): below WIDE columns the table is decision, state, CP, verdict.
    wide = is_wide(console)
    table = Table(title=title)
    table.add_column("decision", no_wrap=True, min_width=SHORT_ID)
    table.add_column("state", overflow="fold")
    for col in (*(dec.MOTORS if wide else ()), "CP", *(("band",) if wide else ()),
                "verdict"):
        table.add_column(col, no_wrap=True, min_width=5 if col != "verdict" else None)
    for i, d in enumerate(decisions[:MAX_TABLE_ROWS]):
        motors = [score_cell(d, m) for m in dec.MOTORS] if wide else []
        table.add_row(d.id[:SHORT_ID], escape(where(d, i + 1 if numbered else None)),
                      *motors, f"{d.cp:.3f}", *((d.band,) if wide else ()),
                      verdict_cell(d))
    return table


def print_vetoes(decisions: list[Decision]) -> None:
    """The explanation of the motor that stopped each vetoed decision, under the table."""
    shown = [d for d in decisions[:MAX_TABLE_ROWS] if dec.first_veto(d)]
    if shown:
        console.print("[bold]first veto[/] ([bold red]✗[/]):")
    for d in shown:
        console.print(f"  {d.id[:SHORT_ID]}  {escape(dec.first_veto(d))}", highlight=False)


def verdict_counts(decisions: list[Decision]) -> str:
    counts: dict[str, int] = {}
    for d in decisions:
        counts[d.verdict] = counts.get(d.verdict, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def print_more(decisions: list[Decision]) -> None:
    if len(decisions) > MAX_TABLE_ROWS:
        console.print(f"({len(decisions) - MAX_TABLE_ROWS} more not shown; --json lists all)")

