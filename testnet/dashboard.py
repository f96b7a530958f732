"""The live testnet dashboard `make run` shows: one row per node, refreshed every second."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from gd.testnet.observe import NodeView, observe, recent_decisions
from gd.testnet.plan import TestnetPlan

REFRESH_S = 1.0


def render(plan: TestnetPlan, views: list[NodeView], started: float) -> Panel:
    table = Table(pad_edge=False)
    for col in ("node", "org", "region", "peers", "native", "pending", "sync", "ledger",
                "conflicts", "decisions"):
        table.add_column(col, no_wrap=True,
                         justify="left" if col in ("node", "org", "region") else "right")
    most = max((v.genes for v in views), default=0) or 1
    for v in views:
        style = "green" if v.running else "red"
        if v.error and v.running:
            style = "yellow"  # up but not answering its control socket
        table.add_row(Text(v.name, style=style), v.org, v.region, str(v.peers), str(v.native),
                      str(v.pending), ProgressBar(total=most, completed=v.genes, width=8),
                      str(v.ledger_height), str(v.conflicts), str(v.decisions))
    decisions = Table(title="recent decisions", show_edge=False)
    for col in ("node", "gene", "domain", "verdict", "band", "CP"):
        decisions.add_column(col, justify="right" if col == "CP" else "left")
    for d in recent_decisions(plan):
        style = {"veto": "red", "adapt": "yellow", "approve": "green"}.get(d.verdict, "")
        decisions.add_row(d.node, d.gene, d.domain, Text(d.verdict, style=style), d.band,
                          f"{d.cp:.3f}")
    up = sum(v.running for v in views)
    hint = Text.from_markup(
        f"[bold]{up}/{len(views)}[/] nodes up ([green]green[/] up, [red]red[/] down) · "
        f"{len(plan.regions)} regions · "
        f"{time.monotonic() - started:.0f}s · Ctrl-C stops the testnet\n"
        f"try: gd-node pending list --home {plan.nodes[0].home}   ·   "
        f"gd-node testnet kill node-2 --dir {plan.directory}")
    return Panel(Group(table, decisions, hint), title="gd-node testnet", border_style="blue")


def run_dashboard(plan: TestnetPlan, *, console: Console | None = None,
                  until: Callable[[], bool] | None = None, max_seconds: float | None = None
                  ) -> None:
    """Refresh until Ctrl-C (KeyboardInterrupt propagates to the caller), `until()` is
    true, or `max_seconds` have passed."""
    started = time.monotonic()
    with Live(render(plan, observe(plan), started), console=console, refresh_per_second=4,
              transient=False) as live:
        while True:
            time.sleep(REFRESH_S)
            live.update(render(plan, observe(plan), started))
            if until is not None and until():
                return
            if max_seconds is not None and time.monotonic() - started >= max_seconds:
                return
