"""`gd-node sync now` and `gd-node conflicts list / show / resolve`.

`sync now` needs the running daemon (it owns the peer connections). The conflict commands
work without one: they read the home's Cortex directly. `resolve` is a write with one
writer (ADR 0022): when a daemon runs it goes through its control socket, so the daemon
writes the resolution itself and announces it to its peers at once; when none runs, this
process writes it under the home's lock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from gd.cli.naming import PeerNames, iso_s, short_peer
from gd.cli.output import (
    Failure,
    console,
    fold_table,
    node_command,
    print_json,
    resolve_home,
)
from gd.cli.writer import node_writer
from gd.genome.gene_json import gene_json
from gd.node.control import ControlError, call
from gd.node.home import Home
from gd.node.local import open_local
from gd.node.store.cortex import CortexError
from gd.node.store.sync_store import Conflict, SyncStore

# `sync now` waits for the daemon's round, which waits (bounded) for each peer: the
# daemon's own per-round bound (10 min) plus a margin for the reply.
SYNC_NOW_TIMEOUT_S = 660.0
# The peer list for names answers in milliseconds.
PEERS_TIMEOUT_S = 5.0


@click.group("sync")
def sync_group() -> None:
    """Sync genes with connected peers (the daemon syncs by itself; this forces a round)."""


@sync_group.command("now")
@click.option("--peer", default=None, help="Only this peer id (default: every connected peer).")
@click.option("--repair", is_flag=True,
              help="Also run anti-entropy reconciliation (finds what the feed missed).")
@node_command()
def sync_now_cmd(peer: str | None, repair: bool, home: Path | None, as_json: bool) -> None:
    """Pull from peers and have them pull from us now; print what moved."""
    result = call(resolve_home(home), "sync_now", timeout=SYNC_NOW_TIMEOUT_S, peer=peer,
                  repair=repair)
    if as_json:
        print_json(result)
        return
    rows = result["peers"]
    if not rows:
        console.print("no connected peers")
        return
    table = fold_table(f"sync with {len(rows)} peer(s)",
                       ("peer", "genes in", "genes out", "payload in/out B",
                        "overhead in/out B", "conflicts", "rejected", "repaired", "errors"))
    names = _peer_names(resolve_home(home))
    for r in rows:
        table.add_row(names.label(r["peer"]), str(r["genes_in"]), str(r["genes_out"]),
                      f"{r['payload_in']:,} / {r['payload_out']:,}",
                      f"{r['overhead_in']:,} / {r['overhead_out']:,}",
                      str(r["conflicts"]), str(r["rejected"]), str(r["repaired"]),
                      "; ".join(r["errors"]) or "-")
    console.print(table)
    if any(r["errors"] for r in rows):
        raise SystemExit(1)


@click.group("conflicts")
def conflicts_group() -> None:
    """Concurrent edits waiting for a person: list, show, resolve."""


def _queued(home: Home) -> list[Conflict]:
    with open_local(home, readonly=True) as node:
        try:
            store = SyncStore(node.cortex)
        except CortexError:
            return []  # the queue's table is created by the first sync: nothing queued yet
        return store.conflicts()


def _find(home: Home, key: str) -> Conflict:
    with open_local(home, readonly=True) as node:
        try:
            store = SyncStore(node.cortex)
        except CortexError:
            raise Failure(f"no conflict {key!r} in the queue") from None
        return store.conflict(key)


def _when(ts: int) -> str:
    return iso_s(ts)


def _peer_names(home: Home) -> PeerNames:
    """Org and region of the daemon's peers (from their handshakes); short ids else."""
    try:
        return PeerNames.from_records(call(home, "peers", all=True,
                                           timeout=PEERS_TIMEOUT_S) or [])
    except ControlError:
        return PeerNames()


def conflict_to_json(c: Conflict) -> dict[str, Any]:
    local, remote = gene_json(c.local), gene_json(c.remote)
    skip = {"version_hash", "signature", "status", "successes", "failures"}
    differs = sorted(k for k in local if k not in skip and local[k] != remote.get(k))
    return {"key": c.key, "gene_id": c.gene_id, "sender": c.sender, "queued_at": c.queued_at,
            "differs": differs, "local": local, "remote": remote}


@conflicts_group.command("list")
@node_command()
def conflicts_list_cmd(home: Path | None, as_json: bool) -> None:
    """Queued conflicts: key, gene, both versions' authors, when."""
    queued = _queued(resolve_home(home))
    if as_json:
        print_json([conflict_to_json(c) for c in queued])
        return
    table = fold_table(f"{len(queued)} conflict(s)", ("key", "name", "local (v, author)",
                                                       "remote (v, author)", "from", "queued"))
    for c in queued:
        table.add_row(c.key, c.local.name, f"v{c.local.version} {short_peer(c.local.author)}",
                      f"v{c.remote.version} {short_peer(c.remote.author)}",
                      short_peer(c.sender),
                      _when(c.queued_at))
    console.print(table)


@conflicts_group.command("show")
@click.argument("key")
@node_command()
def conflicts_show_cmd(key: str, home: Path | None, as_json: bool) -> None:
    """Both versions of one conflict (KEY, or a gene id with one conflict)."""
    data = conflict_to_json(_find(resolve_home(home), key))
    if as_json:
        print_json(data)
        return
    table = fold_table(f"conflict {data['key']} (from {data['sender']})",
                       ("field", "local", "remote"))
    for name in ("name", "version", "author", "vv", "hlc", "condition", "action", "params",
                 "purpose", "version_hash"):
        style = "bold yellow" if name in data["differs"] else ""
        table.add_row(f"[{style}]{name}[/]" if style else name, str(data["local"][name]),
                      str(data["remote"][name]))
    console.print(table)
    console.print("resolve with: gd-node conflicts resolve "
                  f"{data['key']} --keep local|remote|FILE")


@conflicts_group.command("resolve")
@click.argument("key")
@click.option("--keep", required=True, metavar="local|remote|FILE",
              help="Keep our version, the peer's, or the gene in a JSON FILE (for instance "
                   "an edited copy of `conflicts show --json`'s local or remote part).")
@node_command()
def conflicts_resolve_cmd(key: str, keep: str, home: Path | None, as_json: bool) -> None:
    """Settle a conflict with a new version that descends both sides (synced to peers)."""
    where = resolve_home(home)
    content: dict[str, Any] | None = None
    mode = keep
    if keep not in ("local", "remote"):
        path = Path(keep)
        if not path.is_file():
            raise click.BadParameter("must be local, remote or an existing JSON gene file",
                                     param_hint="--keep")
        try:
            content = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise Failure(f"{path}: not JSON: {exc}") from None
        mode = "file"
    with node_writer(where) as writer:
        result = writer.run("conflicts_resolve", key=key, keep=mode, content=content)
    via = "daemon" if writer.via_daemon else "local"
    result["via"] = via
    if as_json:
        print_json(result)
    else:
        console.print(f"resolved {key}: {result['gene_id']} is now v{result['version']} "
                      f"({result['version_hash'][:16]}…), synced to peers "
                      f"{'now' if via == 'daemon' else 'when the daemon next runs'}")


COMMANDS: list[click.Command] = [sync_group, conflicts_group]
