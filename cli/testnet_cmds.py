"""`gd-node testnet ...`: a local federation of real node processes on 127.0.0.1."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import click

from gd.cli.output import (
    F,
    Failure,
    console,
    emit,
    err_console,
    json_option,
    print_json,
    user_errors_with,
)
from gd.testnet import procs
from gd.testnet.build import testnet_join, testnet_up
from gd.testnet.observe import observe, region_ledgers
from gd.testnet.owner import TestnetOwner
from gd.testnet.plan import BOOTSTRAP_FILE, NodePlan, TestnetError, TestnetPlan
from gd.testnet.table import legend, network_lines, node_table

DEFAULT_DIR = Path(".gd/testnet")


def dir_option(fn: F) -> F:
    return click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
                        default=DEFAULT_DIR, show_default=True,
                        help="The testnet's directory.")(fn)


def testnet_command(*, with_dir: bool = True, with_json: bool = True) -> Callable[[F], F]:
    """`--dir`, `--json` and clean failures (a `TestnetError` included): what the testnet
    commands take, in one decorator, as `node_command` is for a node's home."""
    def decorate(fn: F) -> F:
        fn = user_errors_with(TestnetError)(fn)
        fn = json_option(fn) if with_json else fn
        return dir_option(fn) if with_dir else fn

    return decorate


def _plan(directory: Path) -> TestnetPlan:
    return TestnetPlan.load(directory)


@click.group("testnet")
def testnet_group() -> None:
    """Run a local federation: N orgs in R regions as real processes on 127.0.0.1."""


@testnet_group.command("up")
@click.option("--orgs", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--regions", type=click.IntRange(1, 6), default=2, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=1, show_default=True,
              help="Seed of keys, names and gene spread (same seed, same federation).")
@click.option("--dashboard/--no-dashboard", default=False,
              help="Show the live dashboard until Ctrl-C (or SIGTERM), then stop the "
                   "testnet.")
@click.option("--watch-seconds", type=click.FloatRange(0), default=None,
              help="With --dashboard: stop after this many seconds (for demos and tests).")
@testnet_command()
def up_cmd(orgs: int, regions: int, seed: int, dashboard: bool, watch_seconds: float | None,
           directory: Path, as_json: bool) -> None:
    """Create the testnet (homes, keys, configs, bootstrap file, demo genes) if it does
    not exist, and start every node. Nodes already up are left alone. While one `up`
    runs (with --dashboard: until its Ctrl-C), another on the same directory refuses."""
    owner = TestnetOwner(directory)
    owner.acquire()
    try:
        _up_owned(directory, orgs=orgs, regions=regions, seed=seed, dashboard=dashboard,
                  watch_seconds=watch_seconds, as_json=as_json)
    finally:
        owner.release()


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM on a dashboard (`kill`, a service manager, a CI job ending) stops the
    testnet the way Ctrl-C does; its default would end this process and leave every
    node it started running."""
    raise KeyboardInterrupt


def _up_owned(directory: Path, *, orgs: int, regions: int, seed: int, dashboard: bool,
              watch_seconds: float | None, as_json: bool) -> None:
    if not dashboard:
        _up_started(directory, orgs=orgs, regions=regions, seed=seed, dashboard=False,
                    watch_seconds=watch_seconds, as_json=as_json)
        return
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        _up_started(directory, orgs=orgs, regions=regions, seed=seed, dashboard=True,
                    watch_seconds=watch_seconds, as_json=as_json)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _up_started(directory: Path, *, orgs: int, regions: int, seed: int, dashboard: bool,
                watch_seconds: float | None, as_json: bool) -> None:
    try:
        plan = testnet_up(directory, orgs=orgs, regions=regions, seed=seed,
                          progress=None if as_json else lambda m: err_console.print(m))
    except (TestnetError, KeyboardInterrupt):
        if dashboard:
            _stop(directory)
        raise
    if as_json:
        print_json(plan.to_plain())
    if not dashboard:
        if not as_json:
            console.print(f"testnet up: {len(plan.nodes)} nodes. `gd-node testnet status "
                          f"--dir {directory}`, `gd-node testnet down --dir {directory}`")
        return
    from gd.testnet.dashboard import run_dashboard

    try:
        run_dashboard(plan, console=console, max_seconds=watch_seconds)
    except KeyboardInterrupt:
        err_console.print("stopping the testnet...")
    finally:
        _stop(directory)


def _stop(directory: Path) -> None:
    """Stop every node of the testnet as it is now (nodes `join` added included) and
    collect the exit status of each one this process started."""
    try:
        plan = TestnetPlan.load(directory)
    except TestnetError:
        return
    stopped = procs.stop_all(plan)
    procs.reap_children()
    err_console.print(f"stopped {len(stopped)} node(s); data kept in {directory}")


@testnet_group.command("status")
@testnet_command()
def status_cmd(directory: Path, as_json: bool) -> None:
    """Per node: state, ledger role and height, sync lag, peers, genes native/pending,
    conflicts, decisions (as many columns as the terminal is wide), then who leads each
    region's ledger and how the network is cut."""
    plan = _plan(directory)
    views = observe(plan)
    if as_json:
        print_json([v.to_plain() for v in views])
        return
    table, headers = node_table(views, console.width)
    console.print(f"testnet {directory} (seed {plan.seed})", no_wrap=False)
    console.print(table)
    console.print(legend(headers), style="dim")
    for line in network_lines(views, region_ledgers(plan, views)):
        console.print(line)


@testnet_group.command("down")
@testnet_command()
def down_cmd(directory: Path, as_json: bool) -> None:
    """Stop every node cleanly (SIGTERM, then SIGKILL after a bounded wait)."""
    stopped = procs.stop_all(_plan(directory))
    emit({"stopped": stopped}, as_json, f"stopped {len(stopped)} node(s)")


@testnet_group.command("kill")
@click.argument("node")
@testnet_command(with_json=False)
def kill_cmd(node: str, directory: Path) -> None:
    """SIGKILL one node (fault injection: nothing is flushed, nothing is said)."""
    plan = _plan(directory)
    if not procs.stop_node(_node(plan, node), hard=True):
        raise Failure(f"{node} is not running")
    console.print(f"killed {node}")


@testnet_group.command("start")
@click.argument("node")
@testnet_command(with_json=False)
def start_cmd(node: str, directory: Path) -> None:
    """Start one node again (after kill or down)."""
    plan = _plan(directory)
    pid = procs.start_node(_node(plan, node), plan)
    console.print(f"{node} up, pid {pid}")


@testnet_group.command("join")
@click.option("--bootstrap", "bootstrap", type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path), required=True,
              help="The testnet's bootstrap-peers.toml (its directory holds the testnet).")
@click.option("--org", default=None, help="Org of the new node (default: next name).")
@click.option("--region", default=None, help="Region of the new node (default: round robin).")
@testnet_command(with_dir=False)
def join_cmd(bootstrap: Path, org: str | None, region: str | None, as_json: bool) -> None:
    """Add a new node (home, key, config) to a running testnet and start it."""
    directory = bootstrap.parent
    if bootstrap.name != BOOTSTRAP_FILE:
        raise click.BadParameter(f"expected the testnet's {BOOTSTRAP_FILE}",
                                 param_hint="--bootstrap")
    node = testnet_join(directory, org=org, region=region)
    emit({"name": node.name, "peer_id": node.peer_id, "home": node.home}, as_json,
         f"{node.name} ({node.org}, {node.region}) joined: {node.peer_id}")


@testnet_group.command("partition")
@click.argument("spec", nargs=-1, required=True)
@testnet_command(with_json=False)
def partition_cmd(spec: tuple[str, ...], directory: Path) -> None:
    """Cut the network: `partition node-1,node-2 '|' node-3` puts node-1 and node-2 on one
    side and node-3 on the other (nodes not named form a group of their own). Each node
    refuses the others through its deny list; `heal` lifts it."""
    plan = _plan(directory)
    groups = [[_node(plan, name) for name in side] for side in _partition_sides(spec)]
    if len([g for g in groups if g]) < 2 and len(groups[0]) == len(plan.nodes):
        raise click.BadParameter("name at least two groups, e.g. node-1,node-2 '|' node-3",
                                 param_hint="SPEC")
    procs.partition(plan, [g for g in groups if g])
    console.print(" | ".join(",".join(n.name for n in g) for g in groups if g))


PARTITION_SYNTAX = ("separate the sides with '|' (quoted, or the shell reads it as a "
                    "pipe) and the nodes of one side with commas, e.g. "
                    "`gd-node testnet partition node-1,node-2 '|' node-3`")


def _partition_sides(spec: tuple[str, ...]) -> list[list[str]]:
    """The node names of each side of `partition SPEC`. Names separated only by spaces
    (`partition node-1 node-2`) are ambiguous — one side or two? — so they are refused
    with the syntax, never looked up as one name with a space in it."""
    sides = []
    for part in " ".join(spec).split("|"):
        names = []
        for chunk in part.split(","):
            words = chunk.split()
            if len(words) > 1:
                raise click.BadParameter(f"{' '.join(words)!r}: {PARTITION_SYNTAX}",
                                         param_hint="SPEC")
            names += words
        sides.append(names)
    return sides


@testnet_group.command("heal")
@testnet_command(with_json=False)
def heal_cmd(directory: Path) -> None:
    """Lift every partition (empty every node's deny list)."""
    procs.heal(_plan(directory))
    console.print("healed")


def _node(plan: TestnetPlan, name: str) -> NodePlan:
    return plan.node(name)
