"""`gd-node decisions ...`: stored decisions, listed, shown, replayed and exported.

Every command here only reads: it opens the home directly, with or without a daemon.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from gd.cli.gene_ref import gene_option
from gd.cli.motors_common import (
    decisions_table,
    motor_command,
    print_more,
    when,
    where,
)
from gd.cli.output import (
    console,
    err_console,
    node_command,
    print_json,
    resolve_home,
)
from gd.cli.writer import read
from gd.node.app import decisions as dec
from gd.node.local import open_local


@click.group("decisions")
def decisions_group() -> None:
    """Stored decisions: list, show, replay and export."""


@decisions_group.command("list")
@gene_option("--gene", default=None, help="Only decisions about this gene")
@node_command()
def decisions_list_cmd(gene_id: str | None, home: Path | None, as_json: bool) -> None:
    """Decisions, oldest first."""
    with open_local(resolve_home(home), readonly=True) as node:
        if gene_id is not None:
            node.cortex.require_gene(gene_id)
        found = dec.list_decisions(node.cortex, gene_id)
    if as_json:
        print_json([dec.decision_summary(d) for d in found])
        return
    console.print(decisions_table(f"{len(found)} decision(s)", found))
    print_more(found)


@decisions_group.command("show")
@click.argument("decision_id")
@motor_command
def decisions_show_cmd(decision_id: str, home: Path | None, as_json: bool) -> None:
    """One decision: its inputs (gene version, states, seed, request) and every motor."""
    d = read(home, dec.get_decision, decision_id)
    if as_json:
        print_json(dec.decision_full(d))
        return
    grid = Table.grid(padding=(0, 2))
    evidence = d.request.get("evidence", {})
    plan = ", ".join(f"{k} {d.request.get(k)}" for k in ("monte_carlo_n", "epsilon", "cap",
                                                         "k_neighbours", "backend"))
    for key, value in (
            ("decision", d.id), ("gene", f"{d.gene_id} ({d.domain})"),
            ("gene version", d.gene_version), ("decided", when(d.decided_at)),
            ("node", d.node or "-"), ("seed", str(d.seed)), ("request", plan),
            ("evidence", f"{evidence.get('experiences', 0)} experience(s), prior "
                         f"{evidence.get('prior')}, digest {str(evidence.get('digest'))[:16]}…"),
            ("states", where(d)),
            ("CP / band / verdict", f"{d.cp:.4f} / {d.band} / {d.verdict}")):
        grid.add_row(f"[bold]{key}[/]", escape(value))
    for r in d.results:
        flag = " [bold red]VETO[/]" if r.veto else ""
        grid.add_row(f"[bold]{r.motor}[/] v{r.version}",
                     f"{r.score:.4f}{flag}  {escape(r.explanation)}")
    for motor in dec.MOTORS:
        if d.result(motor) is None:
            grid.add_row(f"[bold]{motor}[/]", "[dim]not run (an earlier motor vetoed)[/]")
    console.print(grid)


@decisions_group.command("replay")
@click.argument("decision_id")
@motor_command
def decisions_replay_cmd(decision_id: str, home: Path | None, as_json: bool) -> None:
    """Re-run a decision from its stored inputs; exit 1 unless it reproduces exactly."""
    report = read(home, dec.replay_decision, decision_id)
    if as_json:
        print_json({"decision": decision_id, "exact": report.exact,
                    "differences": list(report.differences), "notes": list(report.notes)})
    else:
        for note in report.notes:
            err_console.print(f"note: {escape(note)}")
        if report.exact:
            console.print(f"decision {decision_id} reproduces exactly")
        else:
            console.print(f"[bold red]decision {decision_id} does not reproduce[/]: "
                          f"{len(report.differences)} difference(s)")
            for diff in report.differences:
                console.print(f"  {escape(diff)}", highlight=False)
    if not report.exact:
        raise SystemExit(1)


@decisions_group.command("export")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json",
              show_default=True)
@gene_option("--gene", default=None, help="Only decisions about this gene")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write here (atomically) instead of to stdout.")
@node_command(with_json=False)
def decisions_export_cmd(fmt: str, gene_id: str | None, output: Path | None,
                         home: Path | None) -> None:
    """Every decision (or one gene's): JSON with all inputs, or CSV with one row each."""
    import json

    with open_local(resolve_home(home), readonly=True) as node:
        if gene_id is not None:
            node.cortex.require_gene(gene_id)
        found = dec.list_decisions(node.cortex, gene_id)
    if fmt == "json":
        text = json.dumps([dec.decision_full(d) for d in found], indent=2, sort_keys=True) + "\n"
    else:
        text = dec.decisions_csv(found)
    if output is None:
        click.echo(text, nl=False)
        return
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, output)
    err_console.print(f"exported {len(found)} decision(s) to {output}")

