"""The node table of `testnet status` and of the dashboard, fitted to the terminal.

Both screens build it here, so they show the same numbers under the same names (the
dashboard's sync column once drew a bar of gene counts while `status` printed the sync
lag: issue 13). Columns are added in order of importance while the table still fits the
width; a column that does not fit is left out whole, never cut, so an id is never shown
half. A down node's numbers are what its disk held when it stopped: shown in parentheses
(and dim), the live-only ones as "-".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gd.testnet.observe import NodeView, RegionLedger, partition_groups

SHORT_ID_CHARS = 6  # "…" + the last 6 characters: unique enough among a testnet's nodes


def short_id(peer_id: str) -> str:
    """A peer id as people compare them: its tail (every Ed25519 id starts 12D3KooW)."""
    return "…" + peer_id[-SHORT_ID_CHARS:]


def _state(v: NodeView) -> str:
    if not v.running:
        return "down"
    return "up" if v.live else "stuck"


def _live(value: Callable[[NodeView], object]) -> Callable[[NodeView], str]:
    """A value only the running daemon knows: '-' when it is not answering."""
    return lambda v: str(value(v)) if v.live else "-"


def _disk(value: Callable[[NodeView], object]) -> Callable[[NodeView], str]:
    """A value read from disk: current while the node runs, last known (in parentheses)
    once it is down."""
    return lambda v: str(value(v)) if v.live else f"({value(v)})"


@dataclass(frozen=True)
class Column:
    header: str
    meaning: str
    cell: Callable[[NodeView], str]
    right: bool = False


# Display order. PRIORITY below decides which columns are kept on a narrow terminal.
COLUMNS: dict[str, Column] = {c.header: c for c in (
    Column("node", "", lambda v: v.name),
    Column("state", "stuck = up, not answering", _state),
    Column("org", "", lambda v: v.org),
    Column("region", "", lambda v: v.region),
    Column("role", "in its region's ledger",
           _live(lambda v: v.role or "?")),
    Column("ledger", "entries",
           _disk(lambda v: v.ledger_height), right=True),
    Column("sync lag", "feed entries still to pull",
           _live(lambda v: v.sync_lag), right=True),
    Column("peers", "connected", _live(lambda v: v.peers), right=True),
    Column("native", "own genes", _disk(lambda v: v.native), right=True),
    Column("pending", "received, awaiting approval", _disk(lambda v: v.pending),
           right=True),
    Column("conflicts", "queued edits", _live(lambda v: v.conflicts),
           right=True),
    Column("decisions", "by its motors", _disk(lambda v: v.decisions),
           right=True),
    Column("peer id", "", lambda v: short_id(v.peer_id)),
    Column("pid", "", lambda v: str(v.pid or "-"), right=True),
)}
PRIORITY = ("node", "state", "ledger", "role", "region", "org", "sync lag", "native",
            "pending", "peers", "conflicts", "decisions", "peer id", "pid")
STALE_NOTE = "(n): last known, node down"


def _build(views: list[NodeView], headers: list[str], *, dashboard: bool) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    for header in headers:
        table.add_column(header, no_wrap=True,
                         justify="right" if COLUMNS[header].right else "left")
    for v in views:
        style = "" if v.live else "dim"
        cells: list[str | Text] = [COLUMNS[h].cell(v) for h in headers]
        if dashboard:
            colour = "green" if v.live else ("yellow" if v.running else "red")
            cells[0] = Text(v.name, style=f"bold {colour}")
        table.add_row(*cells, style=style)
    return table


def node_table(views: list[NodeView], width: int, *, dashboard: bool = False
               ) -> tuple[Table, list[str]]:
    """The widest table of `views` that fits `width` columns; returns it and the headers
    it kept (the legend explains those)."""
    probe = Console(width=10_000)
    kept: list[str] = []
    for header in PRIORITY:
        trial = [h for h in COLUMNS if h in (*kept, header)]
        if kept and probe.measure(_build(views, trial, dashboard=dashboard)).maximum > width:
            continue
        kept = trial
    return _build(views, kept, dashboard=dashboard), kept


def legend(headers: list[str]) -> str:
    """One line saying what each shown column means (and how stale values look)."""
    parts = [f"{h}: {COLUMNS[h].meaning}" for h in headers if COLUMNS[h].meaning]
    return " · ".join([*parts, STALE_NOTE])


def network_lines(views: list[NodeView], ledgers: list[RegionLedger]) -> list[str]:
    """Who leads each region's ledger, and how the network is cut (if it is)."""
    leads = []
    for r in ledgers:
        if r.leader is not None:
            leads.append(f"{r.region}: {r.leader}" + (f" (term {r.term})" if r.term else ""))
        elif r.live:
            leads.append(f"{r.region}: no leader (no quorum)")
        else:
            leads.append(f"{r.region}: all nodes down")
    lines = ["ledger leaders  " + " · ".join(leads)]
    groups = partition_groups(views)
    lines.append("partition       " + (" | ".join(",".join(g) for g in groups) if groups
                                       else "none (every node may reach every other)"))
    return lines
