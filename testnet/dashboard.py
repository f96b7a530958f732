"""The live testnet dashboard `make run` shows: one row per node, refreshed every second.

It re-reads the plan on each refresh, so a node added by `testnet join` in another
terminal appears (and is stopped with the rest on Ctrl-C), and it collects the exit
status of any node it started that dies meanwhile (no <defunct> processes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from gd.testnet import procs
from gd.testnet.observe import NodeView, observe, recent_decisions, region_ledgers
from gd.testnet.plan import TestnetError, TestnetPlan
from gd.testnet.table import legend, network_lines, node_table

REFRESH_S = 1.0
# The panel's border and padding take this many columns of the terminal.
PANEL_CHROME = 4


def render(plan: TestnetPlan, views: list[NodeView], started: float, *,
           width: int = 100) -> Panel:
    table, headers = node_table(views, max(20, width - PANEL_CHROME), dashboard=True)
    decisions = Table(title="recent decisions", show_edge=False)
    for col in ("node", "gene", "domain", "verdict", "band", "CP"):
        decisions.add_column(col, justify="right" if col == "CP" else "left", no_wrap=True)
    for d in recent_decisions(plan):
        style = {"veto": "red", "adapt": "yellow", "approve": "green"}.get(d.verdict, "")
        decisions.add_row(d.node, d.gene, d.domain, Text(d.verdict, style=style), d.band,
                          f"{d.cp:.3f}")
    up = sum(v.running for v in views)
    ledgers = region_ledgers(plan, views)
    network = Text("\n".join(network_lines(views, ledgers)))
    # The node worth killing: the leader of a region that can lose one (3+ nodes).
    target = next((r.leader for r in ledgers if r.leader and
                   sum(v.region == r.region for v in views) >= 3), plan.nodes[0].name)
    hint = Text.from_markup(
        f"[bold]{up}/{len(views)}[/] nodes up ([green]green[/] up, [red]red[/] down, "
        f"[yellow]yellow[/] not answering) · {len(plan.regions)} regions · "
        f"{time.monotonic() - started:.0f}s · Ctrl-C stops the testnet\n"
        f"try: gd-node testnet kill {target} --dir {plan.directory}   (its region "
        f"elects another leader)")
    return Panel(Group(table, Text(legend(headers), style="dim"), network,
                       Text(console_line(views)), decisions, hint),
                 title="gd-node testnet", border_style="blue")


def console_line(views: list[NodeView]) -> str:
    """Where each running node's web console is (its API URL + /console/): a person
    opens it and signs in with a token from `gd-node tokens create --home NODE_HOME`."""
    urls = [f"{v.name} {v.extra['api_url']}/console/" for v in views
            if v.live and v.extra.get("api_url")]
    return "web console     " + ("  ·  ".join(urls) if urls else "none running (no API)")


def _reload(plan: TestnetPlan) -> TestnetPlan:
    """The plan as it is now on disk (a `join` adds nodes); the old one if unreadable."""
    try:
        return TestnetPlan.load(Path(plan.directory))
    except TestnetError:
        return plan


def run_dashboard(plan: TestnetPlan, *, console: Console | None = None,
                  until: Callable[[], bool] | None = None, max_seconds: float | None = None
                  ) -> TestnetPlan:
    """Refresh until Ctrl-C (KeyboardInterrupt propagates to the caller), `until()` is
    true, or `max_seconds` have passed. Returns the plan as last read."""
    console = console or Console()
    started = time.monotonic()
    with Live(render(plan, observe(plan), started, width=console.width), console=console,
              refresh_per_second=4, transient=False) as live:
        while True:
            time.sleep(REFRESH_S)
            procs.reap_children()
            plan = _reload(plan)
            live.update(render(plan, observe(plan), started, width=console.width))
            if until is not None and until():
                return plan
            if max_seconds is not None and time.monotonic() - started >= max_seconds:
                return plan
