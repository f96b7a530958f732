"""Sovereignty from the command line: share, revoke, policies, agreements, audit, and the
adaptation workflow (pending, approve, reject, rollback, forget).

Reads open the home directly, with or without a daemon. Writes (share, revoke, approve,
reject, rollback, forget) go through `gd.cli.writer`: the running daemon does them and
tells its sovereignty and sync services at once, or, with no daemon, this process does
them under the home's lock. Ledger records go through the node's own ledger
(`gd.node.services.recorder`).

`COMMANDS` lists the click objects to mount on the main group; ``genes-forget`` is meant
to be mounted as ``genes forget``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.markup import escape

from gd.cli.gene_ref import gene_argument, gene_option
from gd.cli.naming import PeerNames
from gd.cli.output import (
    Failure,
    console,
    emit,
    fold_table,
    node_command,
    print_json,
    resolve_home,
)
from gd.cli.receipts import ledger_note
from gd.cli.sovereignty_tables import (
    agreements_table,
    audit_table,
    names_for,
    pending_table,
    share_back_command,
)
from gd.cli.writer import write
from gd.node.app.adaptation import AdaptationDesk, AdaptationError
from gd.node.control_methods.ops import gene_brief
from gd.node.local import LocalNode, open_local
from gd.node.services.recorder import LedgerRecorder
from gd.node.store.audit import EXPORT_FORMATS, AuditError, AuditLog
from gd.node.store.policy_store import PolicyStore, rule_from_options
from gd.protocol.policy_rules import Direction, PeerInfo, ResidencyRule, Subject, receivers
from gd.protocol.sovereignty import ShareDecision
from gd.protocol.sovereignty_agreements import ProposalError

F = TypeVar("F", bound=Callable[..., Any])

def ledger_sink(node: LocalNode, audit: AuditLog) -> LedgerRecorder:
    """Approvals, rejections, rollbacks, agreements and revocations go on the node's
    ledger (signed, hash-chained, fsync'd before the command reports success)."""
    return LedgerRecorder(node.cortex.env, node.key)


_OUR_ERRORS = (AdaptationError, AuditError, ProposalError)


sovereignty_command = node_command(*_OUR_ERRORS)


class _Session:
    """One command's view of the home: node, audit log, policy store, adaptation desk."""

    def __init__(self, node: LocalNode) -> None:
        self.node = node
        self.audit = AuditLog(node.cortex)
        self.store = PolicyStore(node.cortex, node.key, org=node.config.org,
                                 region=node.config.region, audit=self.audit)
        self.ledger = ledger_sink(node, self.audit)
        self.desk = AdaptationDesk(node.cortex, node.key, self.ledger, self.audit)


def _names(s: _Session) -> PeerNames:
    return names_for(s.store.peers(), s.node.key.peer_id, s.node.config.org,
                     s.node.config.region)


@contextlib.contextmanager
def _session(home: Path | None, *, readonly: bool = False) -> Iterator[_Session]:
    """Reads (direct, with or without a daemon); writes go through `node_writer`."""
    with open_local(resolve_home(home), readonly=readonly) as node:
        yield _Session(node)


def _with_option(fn: F) -> F:
    return click.option("--with", "target", required=True, metavar="PEER|org:NAME|region:R",
                        help="Whom the rule is about.")(fn)


# -- share / revoke ---------------------------------------------------------------------------


@click.command("share")
@_with_option
@click.option("--domain", required=True, help="Domain slug, or * for every domain.")
@click.option("--direction", type=click.Choice([d.value for d in Direction]), default="both",
              show_default=True)
@click.option("--anonymize", is_flag=True, help="Pseudonymise metadata for this subject.")
@click.option("--allow-forward", is_flag=True, help="Receivers may pass genes on.")
@click.option("--deny", is_flag=True, help="A deny rule: overrides every allow it matches.")
@sovereignty_command
def share_cmd(target: str, domain: str, direction: str, anonymize: bool, allow_forward: bool,
              deny: bool, home: Path | None, as_json: bool) -> None:
    """Share DOMAIN with a peer, an org or a region (a signed proposal to each known peer
    it matches; it flows once the other side shares back)."""
    rule = rule_from_options(target, domain, direction=direction, anonymize=anonymize,
                             allow_forward=allow_forward, deny=deny)  # bad input: here
    data = write(home, "share", target=target, domain=domain, direction=direction,
                 anonymize=anonymize, allow_forward=allow_forward, deny=deny)
    with _session(home) as s:  # names and the share-back line: reads
        names = _names(s)
        back = share_back_command(rule, s.node.config.org, s.node.config.region,
                                  s.node.key.peer_id)
    data["share_back"] = back
    touched = data["agreements"]
    if as_json:
        print_json(data)
        return
    console.print(f"rule {escape(names.text(data['description']))}", soft_wrap=True)
    for a in touched:
        console.print(f"  {escape(names.label(a['peer']))}: {a['state']}", soft_wrap=True)
    if back and (not touched or any(str(a["state"]) == "proposed" for a in touched)):
        console.print("it flows once the other side shares back; they run:", soft_wrap=True)
        console.print(f"  {escape(back)}", soft_wrap=True, highlight=False)
    if not touched and back:
        console.print("(no known peer matches yet: the proposal goes out when one connects)",
                      soft_wrap=True)


@click.command("revoke")
@_with_option
@click.option("--domain", required=True, help="Domain slug, or *.")
@click.option("--direction", type=click.Choice([d.value for d in Direction]), default=None,
              help="Only the rule for this direction (default: all of them).")
@click.option("--deny", is_flag=True, help="Remove a deny rule instead of a share.")
@sovereignty_command
def revoke_cmd(target: str, domain: str, direction: str | None, deny: bool,
               home: Path | None, as_json: bool) -> None:
    """Stop sharing DOMAIN with a subject (tells the peers, recorded on the ledger)."""
    subject = Subject.parse(target)  # bad input: here
    data = write(home, "revoke", target=target, domain=domain, direction=direction,
                 deny=deny)
    if not data["removed"]:
        raise Failure(f"no {'deny' if deny else 'share'} rule for {domain} with {subject}")
    if as_json:
        print_json({"removed": data["removed"]})
    else:
        for text in data["descriptions"]:
            console.print(f"revoked {text}")


# -- policy ----------------------------------------------------------------------------------


@click.group("policy")
def policy_group() -> None:
    """Inspect and test the share policy."""


@policy_group.command("list")
@sovereignty_command
def policy_list_cmd(home: Path | None, as_json: bool) -> None:
    """Our rules, residency rules, and what peers have shared with us."""
    with _session(home) as s:
        policy = s.store.policies()
    data = {"rules": [dict(r.to_plain(), id=r.rule_id) for r in policy.rules],
            "residency": [r.to_plain() for r in policy.residency],
            "remote": {peer: [r.describe() for r in rules]
                       for peer, rules in policy.remote.items()}}
    if as_json:
        print_json(data)
        return
    table = fold_table(f"{len(policy.rules)} rule(s) (default: deny)",
                       ("effect", "direction", "domain", "with", "options"))
    for r in policy.rules:
        opts = ", ".join(n for n, on in (("anonymize", r.anonymize),
                                         ("allow-forward", r.allow_forward)) if on)
        table.add_row(str(r.effect), str(r.direction), r.domain, str(r.subject), opts or "-")
    console.print(table)
    for residency in policy.residency:
        console.print(f"residency: {residency.describe()}")
    for peer, rules in policy.remote.items():
        for rule in rules:
            console.print(f"from {peer}: {rule.describe()}")


def _receivers(store: PolicyStore, target: str, org: str | None, region: str | None
               ) -> list[PeerInfo]:
    subject = Subject.parse(target)
    peers = receivers(store, subject, org, region)
    if not peers:
        raise Failure(f"no known peer matches {subject}; name a peer id (with --org and "
                      "--region for one not met yet)")
    return peers


@policy_group.command("test")
@_with_option
@gene_option("--gene", required=True, help="The gene to test")
@click.option("--org", default=None, help="Assume this org for the peer.")
@click.option("--region", default=None, help="Assume this region for the peer.")
@sovereignty_command
def policy_test_cmd(target: str, gene_id: str, org: str | None, region: str | None,
                    home: Path | None, as_json: bool) -> None:
    """Would GENE go to this peer? Explains which rule decides and why."""
    with _session(home) as s:
        gene = s.node.cortex.require_gene(gene_id)
        policy = s.store.policies()
        results: list[tuple[PeerInfo, ShareDecision]] = [
            (peer, policy.explain(gene, peer.peer_id, peer.org, peer.region))
            for peer in _receivers(s.store, target, org, region)]
    if as_json:
        print_json([dict(d.to_plain(), peer=p.peer_id) for p, d in results])
        return
    for peer, decision in results:
        verdict = "[green]SEND[/]" if decision.allowed else "[red]WITHHOLD[/]"
        console.print(f"{verdict} {gene.id} -> {peer.peer_id}: {decision.reason}")
        console.print(f"  deciding rule: {decision.rule_id}")
        for step in decision.steps:
            console.print(f"  - {step}", highlight=False)


@policy_group.command("residency")
@click.option("--domain", required=True, help="Domain slug, or *.")
@click.option("--region", required=True, help="The region its genes must stay in.")
@click.option("--remove", is_flag=True, help="Remove the rule instead.")
@sovereignty_command
def policy_residency_cmd(domain: str, region: str, remove: bool, home: Path | None,
                         as_json: bool) -> None:
    """Data residency: genes of DOMAIN never leave REGION."""
    rule = ResidencyRule(domain, region)  # bad input: here
    changed = write(home, "residency", domain=domain, region=region, remove=remove)
    if as_json:
        print_json({"rule": rule.rule_id, "changed": changed, "removed": remove})
    else:
        console.print(f"{'removed' if remove else 'set'}: {rule.describe()}"
                      + ("" if changed else " (unchanged)"))


# -- agreements ---------------------------------------------------------------------------------


@click.group("agreements")
def agreements_group() -> None:
    """Federation agreements (both sides' signed shares)."""


@agreements_group.command("list")
@sovereignty_command
def agreements_list_cmd(home: Path | None, as_json: bool) -> None:
    """Agreements as proposed / effective / revoked."""
    with _session(home) as s:
        agreements = s.store.agreements()
        names = _names(s)
    if as_json:
        print_json([a.to_json() for a in agreements])
        return
    console.print(agreements_table([a.to_json() for a in agreements], names, console))


# -- audit ----------------------------------------------------------------------------------------


@click.group("audit")
def audit_group() -> None:
    """The hash-chained audit log of genes in and out and policy events."""


@audit_group.command("verify")
@sovereignty_command
def audit_verify_cmd(home: Path | None, as_json: bool) -> None:
    """Recompute the chain; exit 1 and name the first bad record if it is broken."""
    with _session(home) as s:
        report = s.audit.verify()
    if as_json:
        print_json(report.to_json())
    elif report.ok:
        console.print(f"audit log ok: {report.size} record(s), head {report.head.hex()}")
    if not report.ok:
        if not as_json:
            raise Failure(f"audit log broken at record {report.bad_index}: {report.reason}")
        raise SystemExit(1)


def _parse_since(text: str | None) -> int | None:
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter("use milliseconds since the epoch or an ISO date",
                                 param_hint="--since") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


@audit_group.command("list")
@click.option("--kind", default=None, help="Only records of this kind (e.g. gene_refused).")
@click.option("--last", "last", type=click.IntRange(1, 100_000), default=50, show_default=True,
              help="Show the most recent N records.")
@sovereignty_command
def audit_list_cmd(kind: str | None, last: int, home: Path | None, as_json: bool) -> None:
    """The most recent audit records, peers shown as org (region) and short id."""
    with _session(home) as s:
        records = list(s.audit.records(kind=kind))[-last:]
        names = _names(s)
    if as_json:
        print_json([r.to_json() for r in records])
        return
    console.print(audit_table(records, names, console))


@audit_group.command("export")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="json",
              show_default=True)
@click.option("--since", default=None, help="Only records from this time (ms or ISO date).")
@node_command(*_OUR_ERRORS, with_json=False)
def audit_export_cmd(fmt: str, since: str | None, home: Path | None) -> None:
    """Print the audit log as JSON or CSV."""
    since_ms = _parse_since(since)
    with _session(home) as s:
        text = s.audit.export(fmt, since_ms)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


# -- adaptation -----------------------------------------------------------------------------------


@click.group("pending")
def pending_group() -> None:
    """Genes received from peers waiting for approval."""


@pending_group.command("list")
@click.option("--domain", default=None, help="Only this domain.")
@sovereignty_command
def pending_list_cmd(domain: str | None, home: Path | None, as_json: bool) -> None:
    """Genes in adaptation_pending."""
    with _session(home) as s:
        genes = [gene_brief(g, s.desk.latest_cp(g.id)) for g in s.desk.pending(domain)]
        names = _names(s)
    if as_json:
        print_json(genes)
        return
    console.print(pending_table(genes, names, console))


@pending_group.command("show")
@gene_argument()
@sovereignty_command
def pending_show_cmd(gene_id: str, home: Path | None, as_json: bool) -> None:
    """The gene beside its local variants, each with its latest CP."""
    with _session(home) as s:
        view = s.desk.show(gene_id)
    data: dict[str, Any] = {"original": gene_brief(view.original, view.original_cp),
            "variants": [gene_brief(v, cp) for v, cp in view.variants]}
    if as_json:
        print_json(data)
        return
    table = fold_table(f"{view.original.id} and {len(view.variants)} variant(s)",
                       ("", "id", "v", "status", "action", "condition", "cp"))
    for label, g in [("original", data["original"])] + [("variant", v) for v in
                                                         data["variants"]]:
        table.add_row(label, g["id"], str(g["version"]), g["status"], g["action"],
                      g["condition"], "-" if g["cp"] is None else f"{g['cp']:.3f}")
    console.print(table)


@click.command("approve")
@gene_argument()
@gene_option("--variant", name="variant", default=None,
             help="Approve this variant in the gene's place")
@sovereignty_command
def approve_cmd(gene_id: str, variant: str | None, home: Path | None, as_json: bool) -> None:
    """Make a pending gene (or one of its variants) native; recorded on the ledger."""
    data = write(home, "approve", gene_id=gene_id, variant=variant)
    briefs = data["genes"]
    if as_json:
        briefs[0]["ledger"] = data["ledger"]
        print_json(briefs)
    else:
        for g in briefs:
            console.print(f"{g['id']}: {g['status']}")
        note = ledger_note(data["ledger"])
        console.print(f"approved; {note}" if note else "approved; recorded on the ledger",
                      soft_wrap=True)


@click.command("reject")
@gene_argument()
@click.option("--reason", required=True, help="Why (kept in the audit log and the ledger).")
@sovereignty_command
def reject_cmd(gene_id: str, reason: str, home: Path | None, as_json: bool) -> None:
    """Reject a pending gene."""
    brief = write(home, "reject", gene_id=gene_id, reason=reason)
    emit(brief, as_json, f"{brief['id']}: rejected")


@click.command("rollback")
@gene_argument()
@click.option("--to", "to_version", type=click.IntRange(1), required=True,
              help="The earlier version whose content to restore.")
@sovereignty_command
def rollback_cmd(gene_id: str, to_version: int, home: Path | None, as_json: bool) -> None:
    """Write a new version equal to version --to (it descends the current one)."""
    brief = write(home, "rollback", gene_id=gene_id, to_version=to_version)
    if as_json:
        print_json(brief)
    else:
        console.print(f"{brief['id']}: version {brief['version']} restores version "
                      f"{to_version}")


@click.command("genes-forget")
@gene_argument()
@sovereignty_command
def forget_cmd(gene_id: str, home: Path | None, as_json: bool) -> None:
    """Delete a gene's content here and list the peers to send tombstones to."""
    data = write(home, "forget", gene_id=gene_id)
    peers = data["tombstones_for"]
    if as_json:
        print_json(data)
    else:
        console.print(f"forgot {gene_id}; tombstones for {len(peers)} peer(s)")
        for peer in peers:
            console.print(f"  {peer}")


COMMANDS: list[click.Command] = [
    share_cmd, revoke_cmd, policy_group, agreements_group, audit_group, pending_group,
    approve_cmd, reject_cmd, rollback_cmd, forget_cmd,
]
