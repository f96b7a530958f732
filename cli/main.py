"""`gd-node`: the command-line entry point (click + rich).

Commands that only read work with no daemon running (they open the Cortex read-only);
commands that write open it read-write, which LMDB allows alongside a running daemon.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.panel import Panel
from rich.table import Table

from gd.cli.api_cmds import COMMANDS as API_COMMANDS
from gd.cli.genes_cmds import genes_group, synapse_group
from gd.cli.ledger_cmds import ledger_group
from gd.cli.motors_cmds import LAZY_COMMANDS as MOTORS_COMMANDS
from gd.cli.org_cmds import COMMANDS as ORG_COMMANDS
from gd.cli.output import (
    DEBUG_ENV,
    Failure,
    GuardedGroup,
    console,
    emit,
    err_console,
    json_option,
    node_command,
    print_json,
    print_rows,
    resolve_home,
    user_errors,
)
from gd.cli.sovereignty_cmds import COMMANDS as SOVEREIGNTY_COMMANDS
from gd.cli.sovereignty_cmds import forget_cmd
from gd.cli.sync_cmds import COMMANDS as SYNC_COMMANDS
from gd.cli.version import version_option
from gd.genome.errors import ValidationError
from gd.genome.identity import NodeKey
from gd.node.config import DEFAULT_LISTEN, NodeConfig
from gd.node.control import ControlError, call
from gd.node.local import initialise_home, load_identity
from gd.node.lock import holder_pid
from gd.node.store import cortex_owner
from gd.node.store.cortex import Cortex

# `status` asks a running daemon for its live view; a stuck one must not hang the CLI.
STATUS_CALL_TIMEOUT_S = 5.0
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=GuardedGroup, context_settings=CONTEXT)
@version_option()
@click.option("--debug", is_flag=True,
              help=f"Show the Python traceback of an unexpected error (or set {DEBUG_ENV}=1).")
def cli(debug: bool) -> None:
    """gd-node: a Digital Genome federation node.

    Start with `gd-node init --org NAME --region REGION`, import genes with
    `gd-node genes import FILE`, and run the node with `gd-node run`. Every command takes
    --home (default $GD_HOME, else ~/.gd-node) and most take --json.
    """


@cli.command()
@click.option("--org", required=True, help="Your organisation's name (signed into handshakes).")
@click.option("--region", required=True, help="Region slug, e.g. eu-west.")
@click.option("--listen", "listen", multiple=True,
              help=f"Multiaddr to listen on (repeatable; default {DEFAULT_LISTEN}).")
@click.option("--bootstrap", default="", help="Bootstrap peers file for the config.")
@click.option("--seed", "seed_hex", default=None, hidden=True,
              help="Hex 32-byte key seed (testnets and tests only).")
@node_command()
def init(org: str, region: str, listen: tuple[str, ...], bootstrap: str, seed_hex: str | None,
         home: Path | None, as_json: bool) -> None:
    """Create a node home: Ed25519 key (mode 0600), commented config.toml, empty Cortex.

    Refuses to touch a home that already has a key: a node's key is its identity.
    """
    where = resolve_home(home)
    if where.key_path.exists():
        raise Failure(f"{where.key_path} already exists: this home is initialised "
                      "(a node key is never overwritten)")
    try:
        cfg = NodeConfig(org=org, region=region, listen=listen or (DEFAULT_LISTEN,),
                         bootstrap=bootstrap)
    except ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint=f"--{exc.field.split('.')[-1]}"
                                 ) from None
    if seed_hex is not None:
        try:
            key = NodeKey.from_seed(bytes.fromhex(seed_hex))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--seed") from None
    else:
        key = NodeKey.generate()
    initialise_home(where, cfg, key)
    info = {"home": str(where.root), "peer_id": key.peer_id, "org": org, "region": region,
            "listen": list(cfg.listen)}
    if as_json:
        print_json(info)
    else:
        console.print(f"initialised {where.root}")
        console.print(f"peer id: [bold]{key.peer_id}[/]")


def _status_data(home: Path | None) -> dict[str, Any]:
    where = resolve_home(home)
    cfg, key = load_identity(where)
    pid = holder_pid(where.pid_path)
    data: dict[str, Any] = {
        "home": str(where.root), "peer_id": key.peer_id, "org": cfg.org, "region": cfg.region,
        "listen": list(cfg.listen), "daemon": {"running": pid is not None, "pid": pid},
    }
    if pid is not None:
        # The running daemon knows what the config cannot: the ports it really bound
        # (tcp/0 picks one), its peers, its ledger height and sync lag.
        try:
            live = call(where, "status", timeout=STATUS_CALL_TIMEOUT_S)
        except ControlError as exc:
            data["daemon"]["error"] = str(exc)
        else:
            data["daemon"].update({k: live.get(k) for k in (
                "addrs", "peers", "peers_by_region", "ledger_height", "sync_lag",
                "conflicts", "uptime_s", "api_url", "adaptation")})
    with Cortex.open(where.cortex_path, readonly=True) as cortex:
        stats = cortex.stats()
        data["cortex"] = {
            "schema": cortex.schema_version, "genes": stats.genes, "versions": stats.versions,
            "synapses": stats.synapses, "experiences": stats.experiences,
            "decisions": stats.decisions, "change_seq": stats.last_seq,
            "size_bytes": stats.size_bytes, "by_status": stats.by_status,
            "by_domain": stats.by_domain,
        }
    return data


@cli.command()
@node_command()
def status(home: Path | None, as_json: bool) -> None:
    """Identity, daemon state and Cortex contents of this node."""
    data = _status_data(home)
    if as_json:
        print_json(data)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_row("[bold]peer id[/]", data["peer_id"])
    grid.add_row("[bold]org / region[/]", f"{data['org']} / {data['region']}")
    grid.add_row("[bold]listen[/]", ", ".join(data["listen"]))
    daemon = data["daemon"]
    grid.add_row("[bold]daemon[/]", f"running (pid {daemon['pid']})" if daemon["running"]
                 else "not running")
    if daemon.get("addrs"):
        grid.add_row("[bold]addresses[/]", "\n".join(daemon["addrs"]))
        if daemon.get("api_url"):
            grid.add_row("[bold]api[/]", daemon["api_url"])
        grid.add_row("[bold]peers / ledger[/]",
                     f"{daemon['peers']} peers, ledger height {daemon['ledger_height']}, "
                     f"sync lag {daemon['sync_lag']}, conflicts {daemon['conflicts']}")
    c = data["cortex"]
    by_status = ", ".join(f"{k} {v}" for k, v in sorted(c["by_status"].items())) or "-"
    by_domain = ", ".join(f"{k} {v}" for k, v in sorted(c["by_domain"].items())) or "-"
    grid.add_row("[bold]genes[/]", f"{c['genes']} ({by_status})")
    grid.add_row("[bold]domains[/]", by_domain)
    grid.add_row("[bold]versions / changes[/]", f"{c['versions']} / {c['change_seq']}")
    grid.add_row("[bold]synapses[/]", str(c["synapses"]))
    grid.add_row("[bold]experiences / decisions[/]", f"{c['experiences']} / {c['decisions']}")
    grid.add_row("[bold]cortex size[/]", f"{c['size_bytes'] / 1e6:.1f} MB")
    console.print(Panel(grid, title=f"gd-node {data['home']}", expand=False))


@cli.command()
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@node_command()
def backup(dest: Path, home: Path | None, as_json: bool) -> None:
    """Online compacting copy of the Cortex into the empty directory DEST.

    Safe while the daemon runs: the copy is one consistent read snapshot.
    """
    where = resolve_home(home)
    _, key = load_identity(where)
    with Cortex.open(where.cortex_path, readonly=True) as cortex:
        cortex_owner.backup(cortex, dest, key.peer_id)
    size = sum(p.stat().st_size for p in dest.iterdir())
    emit({"backup": str(dest), "bytes": size}, as_json,
         f"backed up to {dest} ({size / 1e6:.1f} MB)")


@cli.command()
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--from-other-node", "from_other_node", is_flag=True,
              help="Take over a backup made by another node's key: its native genes and "
                   "agreements become this node's. Refused without this flag.")
@node_command()
def restore(src: Path, from_other_node: bool, home: Path | None, as_json: bool) -> None:
    """Replace this node's Cortex with the backup in SRC (daemon must be stopped).

    The backup is checked before anything changes, including that it was made by this
    node's key; the current Cortex is kept aside as cortex.pre-restore-N.
    """
    where = resolve_home(home)
    _, key = load_identity(where)
    pid = holder_pid(where.pid_path)
    if pid is not None:
        raise Failure(f"the daemon (pid {pid}) is running on {where.root}: stop it first")
    aside, other = cortex_owner.restore(src, where.cortex_path, owner=key.peer_id,
                                        from_other_node=from_other_node)
    if other is not None:
        err_console.print(
            f"warning: this Cortex was made by {other}, not by this node ({key.peer_id}). "
            "Its native genes and its agreements are now listed as this node's, and this "
            "node will sign and share them under its own key.", highlight=False)
    emit({"restored": str(src), "previous": str(aside), "from_other_node": other}, as_json,
         f"restored from {src}; previous Cortex kept at {aside}")


@cli.command()
@click.option("--listen", "listen", multiple=True,
              help="Multiaddr to listen on (repeatable; overrides config.toml).")
@click.option("--bootstrap", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Bootstrap peers file (overrides config.toml).")
@click.option("--log-format", type=click.Choice(["json", "console"]), default=None,
              help="Log format on stderr (default: console on a TTY, else json).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
@node_command(with_json=False)
def run(home: Path | None, listen: tuple[str, ...], bootstrap: Path | None,
        log_format: str | None, log_level: str) -> None:
    """Run the node daemon in the foreground until SIGINT or SIGTERM.

    Prints the peer id and the dialable addresses, then logs structured events on stderr.
    A second `run` on the same home refuses while this one lives.
    """
    from gd.node.runner import run_foreground

    code = run_foreground(resolve_home(home), log_format=log_format, listen=list(listen) or None,
                          bootstrap=bootstrap, log_level=log_level)
    sys.exit(code)


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Include known but unconnected peers.")
@node_command()
def peers(show_all: bool, home: Path | None, as_json: bool) -> None:
    """Peers of the running daemon: id, org, region, address, latency, score, since."""
    from gd.node.control import call

    rows = call(resolve_home(home), "peers", all=show_all)
    print_rows(rows, as_json, f"{len(rows)} peer(s)",
               ("peer id", "org", "region", "address", "latency ms", "score", "since"),
               _peer_cells)


def _peer_cells(p: dict[str, Any]) -> tuple[str, ...]:
    latency = p.get("latency_ms")
    return (p["peer_id"], p.get("org") or "?", p.get("region") or "?",
            (p.get("addrs") or ["-"])[0],
            f"{latency:.1f}" if isinstance(latency, float | int) else "-",
            f"{p.get('score', 0):.2f}", _age(p.get("since")))


@cli.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".gd/demo"), show_default=True, help="Demo home.")
@click.option("--org", default="demo-org", show_default=True)
@click.option("--region", default="eu-west", show_default=True)
@json_option
@user_errors
def demo(directory: Path, org: str, region: str, as_json: bool) -> None:
    """Create (if needed) a demo home and import the demo genes of every domain pack."""
    from gd.testnet.demo import prepare_demo_home

    report = prepare_demo_home(directory, org=org, region=region)
    if as_json:
        print_json(report)
    else:
        console.print(f"demo home {report['home']} (peer {report['peer_id']}): "
                      f"{report['added']} gene(s) added, {report['unchanged']} unchanged")


cli.add_command(genes_group)
cli.add_command(synapse_group)
cli.add_command(ledger_group)
for _cmd in SOVEREIGNTY_COMMANDS:
    if _cmd is forget_cmd:
        genes_group.add_command(_cmd, name="forget")
    else:
        cli.add_command(_cmd)
for _name, _target in MOTORS_COMMANDS.items():
    cli.add_lazy_command(_name, _target)
# The testnet builder imports the domain packs and the motors (its demo data): lazy too.
cli.add_lazy_command("testnet", "gd.cli.testnet_cmds:testnet_group")
for _cmd in ORG_COMMANDS:
    cli.add_command(_cmd)
for _cmd in SYNC_COMMANDS: cli.add_command(_cmd)  # noqa: E701
for _cmd in API_COMMANDS: cli.add_command(_cmd)  # noqa: E701


def _age(since: object) -> str:
    """'42s', '3m', '2h' since a unix timestamp (the daemon reports wall-clock seconds)."""
    if not isinstance(since, int | float):
        return "-"
    seconds = max(0.0, time.time() - since)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"


def main() -> None:
    cli(prog_name="gd-node")
