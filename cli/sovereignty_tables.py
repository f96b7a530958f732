"""The tables of `pending list` and `agreements list`, readable at 80 columns.

Columns are chosen by the terminal's width: ids are short (`gene_ref` accepts any unique
prefix back, and the peer's org and region say who it is), never folded mid-way, and the
long free text (conditions) appears only where it fits. --json keeps everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gd.cli.naming import SHORT_GENE, SHORT_PEER, PeerNames, is_wide, iso_ms
from gd.protocol.policy_rules import Direction, Effect, PeerInfo, ShareRule, SubjectKind

_MIRROR = {Direction.SEND: Direction.RECEIVE, Direction.RECEIVE: Direction.SEND,
           Direction.BOTH: Direction.BOTH}


def names_for(peers: Sequence[PeerInfo], own_id: str, own_org: str,
              own_region: str) -> PeerNames:
    """What this node knows of its peers (the policy store's records), and itself."""
    names = PeerNames.from_records(peers)
    names.add(own_id, own_org, own_region)
    return names


def pending_table(genes: Sequence[dict[str, Any]], names: PeerNames,
                  console: Console) -> Table:
    """One row per pending gene: short id, domain/name, version, origin, CP, and the
    condition when the terminal is wide enough."""
    wide = is_wide(console)
    table = Table(title=f"{len(genes)} pending gene(s)")
    table.add_column("id", no_wrap=True, min_width=SHORT_GENE)
    table.add_column("gene", overflow="fold")
    table.add_column("v", no_wrap=True)
    table.add_column("origin", overflow="fold", min_width=SHORT_PEER + 1)
    table.add_column("cp", no_wrap=True)
    if wide:
        table.add_column("condition", overflow="fold")
    for g in genes:
        row = [g["id"][:SHORT_GENE], escape(f"{g['domain']}/{g['name']}"), str(g["version"]),
               escape(names.label(g["origin"])),
               "-" if g["cp"] is None else f"{g['cp']:.3f}"]
        if wide:
            row.append(escape(g["condition"]))
        table.add_row(*row)
    return table


def agreements_table(agreements: Sequence[dict[str, Any]], names: PeerNames,
                     console: Console) -> Table:
    """One row per agreement (`Agreement.to_json()`): who, what, state, flows, and both
    sides' rules with peer ids in them shown as names."""
    table = Table(title=f"{len(agreements)} agreement(s)")
    table.add_column("peer", overflow="fold", min_width=SHORT_PEER + 1)
    table.add_column("domain", overflow="fold")
    table.add_column("state", no_wrap=True)
    table.add_column("flows", no_wrap=True)
    if is_wide(console):
        table.add_column("ours", overflow="fold")
        table.add_column("theirs", overflow="fold")
    else:
        table.add_column("rules (ours / theirs)", overflow="fold")
    for a in agreements:
        ours = escape(names.text(a["ours"] or "-"))
        theirs = escape(names.text(a["theirs"] or "-"))
        rules = [ours, theirs] if is_wide(console) else [f"{ours} / {theirs}"]
        table.add_row(escape(names.label(a["peer"])), a["domain"], a["state"],
                      ",".join(a["flows"]) or "-", *rules)
    return table


def share_back_command(rule: ShareRule, org: str, region: str, peer_id: str) -> str:
    """The command the other side runs so that `rule` takes effect: the same domain,
    the mirrored direction, addressed to us the way our rule addressed them. '' for a
    deny rule (nothing to agree to)."""
    if rule.effect is not Effect.ALLOW:
        return ""
    target = {SubjectKind.ORG: f"org:{org}", SubjectKind.REGION: f"region:{region}"}.get(
        rule.subject.kind, peer_id)
    direction = _MIRROR[rule.direction]
    extra = "" if direction is Direction.BOTH else f" --direction {direction}"
    return f"gd-node share --with {target} --domain {rule.domain}{extra} --home THEIR_HOME"


def audit_table(records: Sequence[Any], names: PeerNames, console: Console) -> Table:
    """The audit log for a person: ISO time, kind, direction, the peer as `org (region)
    …short-id`, the gene's short id, and (wide terminals) the rule with names."""
    wide = is_wide(console)
    table = Table(title=f"{len(records)} audit record(s)")
    table.add_column("#", no_wrap=True, justify="right")
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("kind", overflow="fold")
    table.add_column("dir", no_wrap=True)
    table.add_column("peer", overflow="fold", min_width=SHORT_PEER + 1)
    table.add_column("gene", no_wrap=True, min_width=SHORT_GENE)
    if wide:
        table.add_column("rule", overflow="fold")
    for r in records:
        row = [str(r.index), iso_ms(r.time_ms), r.kind, r.direction or "-",
               escape(names.label(r.peer)) if r.peer else "-",
               r.gene_id[:SHORT_GENE] or "-"]
        if wide:
            row.append(escape(names.text(r.rule)) or "-")
        table.add_row(*row)
    return table
