"""`gd-node experiences ...`: observed outcomes of applying genes (M_P's evidence).

`add` and `import` go through the node's writer (`gd.cli.writer`: the running daemon,
or this process under the home's lock); `list` reads the home directly.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from gd.cli.gene_ref import gene_argument, gene_option
from gd.cli.motors_common import motor_command, when
from gd.cli.output import console, fold_table, node_command, print_json, resolve_home
from gd.cli.writer import node_writer, write
from gd.node.app import history_import
from gd.node.app.states_file import parse_state_text, read_states
from gd.node.local import open_local


@click.group("experiences")
def experiences_group() -> None:
    """Observed outcomes of applying genes: M_P's evidence."""


@experiences_group.command("add")
@gene_argument()
@click.option("--state", "state_text", default=None,
              help="The state as 'feature=value,feature=value' (every feature of the domain).")
@click.option("--state-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="States file (as for evaluate): one experience per row.")
@click.option("--success/--failure", "success", default=None,
              help="Did applying the gene reach its purpose?")
@click.option("--reward", type=float, default=None, help="A graded outcome (finite number).")
@click.option("--note", default="", help="Free text kept with the experience.")
@motor_command
def experiences_add_cmd(gene_id: str, state_text: str | None, state_file: Path | None,
                        success: bool | None, reward: float | None, note: str,
                        home: Path | None, as_json: bool) -> None:
    """Record that applying GENE_ID in a state succeeded (--success) or failed (--failure)."""
    if (state_text is None) == (state_file is None):
        raise click.UsageError("give exactly one of --state and --state-file")
    if success is None:
        raise click.UsageError("say how it went: --success or --failure")
    where = resolve_home(home)
    with open_local(where, readonly=True) as node:  # a read: which domain's states
        domain = node.cortex.require_gene(gene_id).domain
    if state_text is not None:
        states = [parse_state_text(state_text, domain)]
    else:
        assert state_file is not None
        states = read_states(state_file, domain)
    with node_writer(where) as writer:
        data = writer.run("experiences_add", gene_id=gene_id,
                          states=[s.to_plain() for s in states], success=success,
                          reward=reward, note=note)
    recorded = data["experiences"]
    if as_json:
        print_json(recorded)
        return
    console.print(f"recorded {len(recorded)} {'success' if success else 'failure'} "
                  f"experience(s) for {gene_id}; it now has {data['successes']} success(es) and "
                  f"{data['failures']} failure(s)", soft_wrap=True)


@experiences_group.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@gene_option("--gene", default=None, help="Back-test this gene")
@click.option("--domain", default=None, help="Back-test every native gene of this domain.")
@click.option("--max-per-gene", type=click.IntRange(1, 100_000),
              default=history_import.MAX_PER_GENE, show_default=True,
              help="At most this many experiences per gene (an even spread of its rows).")
@motor_command
def experiences_import_cmd(path: Path, gene_id: str | None, domain: str | None,
                           max_per_gene: int, home: Path | None, as_json: bool) -> None:
    """Back-test genes on a domain's historical record in PATH and record the outcomes.

    PATH is read by the domain's loader: a C-MAPSS run-to-failure file (train_FD00x.txt)
    for turbofan, a BPI Challenge 2017 event log (CSV or XES) for loan. Every row where
    a gene fires becomes a labelled experience with its provenance (file hash, row); the
    import is one ledger entry.
    """
    if (gene_id is None) == (domain is None):
        raise click.UsageError("give exactly one of --gene and --domain")
    report = write(home, "experiences_import", path=str(path.resolve()), gene_id=gene_id,
                   domain=domain, limit=max_per_gene)
    if as_json:
        print_json(report)
        return
    table = fold_table(f"{escape(path.name)} (sha256 {report['sha256'][:16]}…): "
                       f"{report['rows']} row(s) of {report['domain']}",
                       ("gene", "name", "action", "fires on", "recorded", "success rate"))
    for g in report["genes"]:
        rate = "-" if not g["recorded"] else f"{g['successes'] / g['recorded']:.2f}"
        table.add_row(g["gene_id"], escape(g["name"]), g["action"], str(g["fired"]),
                      "already imported" if g["skipped"] else str(g["recorded"]), rate)
    console.print(table)
    console.print(f"labels: {escape(report['rule'])}", highlight=False)
    console.print(f"{report['recorded']} experience(s) recorded; ledger: {report['ledger']}")


@experiences_group.command("list")
@gene_argument()
@node_command()
def experiences_list_cmd(gene_id: str, home: Path | None, as_json: bool) -> None:
    """Experiences recorded for GENE_ID, oldest first."""
    with open_local(resolve_home(home), readonly=True) as node:
        node.cortex.require_gene(gene_id)
        exps = sorted(node.cortex.experiences_for(gene_id), key=lambda e: (e.observed_at, e.id))
    if as_json:
        print_json([{"id": e.id, **e.to_plain()} for e in exps])
        return
    table = fold_table(f"{len(exps)} experience(s) of {gene_id}",
                       ("id", "observed", "outcome", "reward", "entity@t", "note"))
    for e in exps:
        table.add_row(e.id, when(e.observed_at), "success" if e.success else "failure",
                      "-" if e.reward is None else f"{e.reward:g}",
                      escape(f"{e.state.entity}@{e.state.t}"), escape(e.note))
    console.print(table)

