"""`gd-node genes ...` and `gd-node synapse ...`: the gene store from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gd.cli.gene_ref import gene_argument
from gd.cli.output import (
    Failure,
    console,
    emit,
    err_console,
    fold_table,
    node_command,
    print_json,
    resolve_home,
)
from gd.cli.writer import node_writer, write
from gd.genome.gene import GeneStatus
from gd.genome.gene_json import gene_json
from gd.genome.synapse import SynapseKind
from gd.node.app.importer import DEFAULT_BATCH
from gd.node.local import open_local


@click.group("genes")
def genes_group() -> None:
    """Import, list and inspect genes in the local Cortex."""


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


@genes_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--batch", "batch_size", type=click.IntRange(1, 100_000), default=DEFAULT_BATCH,
              show_default=True, help="Genes per LMDB transaction.")
@click.option("--pending", is_flag=True,
              help="Import as adaptation_pending instead of native.")
@node_command()
def import_cmd(file: Path, batch_size: int, pending: bool, home: Path | None,
               as_json: bool) -> None:
    """Import genes from FILE (JSONL, or CSV by its .csv suffix), signed by this node.

    Bad lines are reported with their line number and skipped; the rest are stored in
    batches of --batch genes, one atomic transaction each. Exit code 1 if any line was
    rejected.
    """
    show_bar = not as_json and err_console.is_terminal
    with node_writer(resolve_home(home)) as writer, Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=err_console, disable=not show_bar) as bar:
        params: dict[str, Any] = {"pending": pending, "batch_size": batch_size}
        if writer.via_daemon:  # the file goes to the daemon, which imports it
            sending = bar.add_task("sending", total=file.stat().st_size)
            params["upload"] = writer.upload(
                file, progress=lambda done: bar.update(sending, completed=done))
        else:
            params["path"] = str(file)
        task = bar.add_task("importing", total=_count_lines(file))
        report = writer.run("genes_import", **params,
                            progress=lambda done: bar.update(task, completed=done))
    if as_json:
        print_json(report)
    else:
        console.print(f"added {report['added']}, updated {report['updated']}, unchanged "
                      f"{report['unchanged']}, synapses {report['synapses']}, rejected "
                      f"{len(report['rejected'])}")
        for item in report["rejected"]:
            err_console.print(f"  line {item['line']}: {item['reason']}", highlight=False)
    if report["rejected"]:
        raise SystemExit(1)


@genes_group.command("list")
@click.option("--domain", help="Only genes of this domain.")
@click.option("--status", type=click.Choice([s.value for s in GeneStatus]),
              help="Only genes with this status.")
@click.option("--origin", help="Only genes from this origin peer id.")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most N genes.")
@node_command()
def list_cmd(domain: str | None, status: str | None, origin: str | None, limit: int | None,
             home: Path | None, as_json: bool) -> None:
    """List genes (head versions)."""
    with open_local(resolve_home(home), readonly=True) as node:
        genes = []
        for gene in node.cortex.genes(domain=domain, status=status, origin=origin):
            genes.append(gene)
            if limit and len(genes) >= limit:
                break
    if as_json:
        print_json([gene_json(g) for g in genes])
        return
    table = fold_table(f"{len(genes)} gene(s)",
                       ("id", "domain", "name", "v", "status", "action", "condition"))
    for g in genes:
        table.add_row(g.id, g.domain, g.name, str(g.version), str(g.status), g.action,
                      g.condition_text())
    console.print(table)


@genes_group.command("show")
@gene_argument()
@node_command()
def show_cmd(gene_id: str, home: Path | None, as_json: bool) -> None:
    """Show one gene with its versions and synapses."""
    with open_local(resolve_home(home), readonly=True) as node:
        gene = node.cortex.require_gene(gene_id)
        versions = node.cortex.gene_versions(gene_id)
        out_syn = node.cortex.synapses_of(gene_id)
        in_syn = node.cortex.synapses_of(gene_id, incoming=True)
    data = gene_json(gene)
    data["versions"] = versions
    data["synapses"] = [s.to_plain() for s in out_syn + in_syn]
    if as_json:
        print_json(data)
        return
    table = Table.grid(padding=(0, 2))
    for key in ("id", "domain", "name", "version", "status", "action", "condition", "params",
                "purpose", "origin", "author", "vv", "version_hash", "successes", "failures",
                "versions"):
        table.add_row(f"[bold]{key}[/]", str(data[key]))
    for s in data["synapses"]:
        table.add_row("[bold]synapse[/]", f"{s['source']} -{s['kind']}({s['weight']:g})-> "
                      f"{s['target']}")
    console.print(table)


@click.group("synapse")
def synapse_group() -> None:
    """Edges between genes (follows, inhibits, specialises)."""


@synapse_group.command("add")
@gene_argument("source")
@gene_argument("target")
@click.option("--kind", type=click.Choice([k.value for k in SynapseKind]), required=True)
@click.option("--weight", type=click.FloatRange(0.0, 1.0), default=1.0, show_default=True)
@node_command()
def synapse_add_cmd(source: str, target: str, kind: str, weight: float, home: Path | None,
                    as_json: bool) -> None:
    """Connect gene SOURCE to gene TARGET."""
    synapse = write(home, "synapse_add", source=source, target=target, kind=kind,
                    weight=weight)
    emit(synapse, as_json, f"{source} -{kind}({weight:g})-> {target}")


@synapse_group.command("list")
@gene_argument()
@click.option("--hops", type=click.IntRange(1, 10), default=1, show_default=True,
              help="Show the k-hop neighbourhood instead of direct edges.")
@node_command()
def synapse_list_cmd(gene_id: str, hops: int, home: Path | None, as_json: bool) -> None:
    """Genes within --hops synapses of GENE_ID."""
    with open_local(resolve_home(home), readonly=True) as node:
        node.cortex.require_gene(gene_id)
        near = node.cortex.neighbourhood(gene_id, hops)
    if as_json:
        print_json(near)
        return
    if not near:
        raise Failure(f"gene {gene_id} has no synapses")
    for other, distance in sorted(near.items(), key=lambda kv: (kv[1], kv[0])):
        console.print(f"{distance}  {other}")
