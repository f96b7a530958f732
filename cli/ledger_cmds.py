"""`gd-node ledger ...`: inspect, prove and verify the local copy of the ledger.

Every command opens the ledger read-only (`gd.node.store.ledger_store.open_ledger`), so it works
with or without a running daemon. Proof documents are JSON so they can be mailed to an
auditor and checked elsewhere with `--verify`:

    inclusion:   {"index", "size", "leaf_hash", "root", "path": [hex, ...]}
    consistency: {"old_size", "new_size", "old_root", "new_root", "path": [hex, ...]}

A proof is first checked on its own (RFC 9162 §2.1.3.2 / §2.1.4.2: the path joins the
leaf or the old root to the root it names), then against this node's ledger when it
holds that size (our root, our leaf). Exit code 1 whenever either check fails.
"""

from __future__ import annotations

import csv
import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import click
from rich.table import Table

from gd.cli.naming import iso_ms
from gd.cli.output import (
    Failure,
    console,
    node_command,
    print_json,
    resolve_home,
)
from gd.genome.identity import NodeKey, is_peer_id
from gd.ledger.errors import LedgerError, ProofError
from gd.ledger.merkle import verify_consistency, verify_inclusion
from gd.node.config import load_config
from gd.node.store.ledger_store import Ledger, open_ledger

F = TypeVar("F", bound=Callable[..., Any])

# A proof document is a few KiB at most (65 hashes of 64 hex characters); refuse to read
# more than this from a file or a pipe.
MAX_PROOF_DOCUMENT = 64 * 1024
# `ledger head` asks a running daemon for its Raft view; it answers in milliseconds.
DAEMON_STATUS_TIMEOUT_S = 5.0
CSV_COLUMNS = ("index", "kind", "author", "hlc", "payload_hash", "idempotency_key",
               "prev_hash", "entry_hash", "signature", "version", "summary")


# Why `commit 9` sits beside `ledger entries 10`: the two count different logs.
RAFT_INDEX_NOTE = ("(commit and applied count Raft log entries: each is a batch of ledger "
                   "entries, a leader's no-op or a membership change; so they differ from "
                   "the ledger's entry count)")

ledger_command = node_command(LedgerError)


@contextmanager
def _ledger(home: Path | None) -> Iterator[Ledger]:
    ledger = open_ledger(resolve_home(home).root, readonly=True)
    try:
        yield ledger
    finally:
        ledger.close()


def _unhex(doc: dict[str, Any], field: str) -> bytes:
    value = doc.get(field)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or len(raw) != 32:
        raise Failure(f"proof document: {field} must be 64 hex characters")
    return raw


def _uint(doc: dict[str, Any], field: str) -> int:
    value = doc.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Failure(f"proof document: {field} must be a non-negative integer")
    return value


def _path(doc: dict[str, Any]) -> tuple[bytes, ...]:
    path = doc.get("path")
    if not isinstance(path, list):
        raise Failure("proof document: path must be a list of hex hashes")
    return tuple(_unhex({"path": item}, "path") for item in path)


def _read_document(handle: IO[str]) -> dict[str, Any]:
    text = handle.read(MAX_PROOF_DOCUMENT + 1)
    if len(text) > MAX_PROOF_DOCUMENT:
        raise Failure(f"proof document is larger than {MAX_PROOF_DOCUMENT} bytes")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Failure(f"proof document is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Failure("proof document must be a JSON object")
    return doc


def _or_verify(what: str, verify: Callable[..., None]) -> Callable[[Callable[..., None]],
                                                                   Callable[..., None]]:
    """Adds `--verify FILE|-` to a proof command: given it, the command checks that proof
    document (`verify`, called with the command's arguments, the document, `home` and
    `as_json`) instead of printing a proof. One option, one meaning, for every proof."""
    def wrap(command: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(command)
        def run(*, check: IO[str] | None, home: Path | None, as_json: bool,
                **args: Any) -> None:
            if check is not None:
                verify(**args, doc=_read_document(check), home=home, as_json=as_json)
                return
            command(home=home, as_json=as_json, **args)

        return click.option("--verify", "check", type=click.File("r"), default=None,
                            metavar="FILE|-",
                            help=f"Check {what} proof document instead of printing one.")(run)
    return wrap


def _proof_holds(verify: Callable[..., None], *args: Any) -> None:
    """Run a Merkle proof check; a proof that does not hold is the user's Failure."""
    try:
        verify(*args)
    except ProofError as exc:
        raise Failure(f"proof does not verify: {exc}") from None


@click.group("ledger")
def ledger_group() -> None:
    """The signed, hash-chained ledger: heads, proofs, verification and export."""


@ledger_group.command("head")
@ledger_command
def head_cmd(home: Path | None, as_json: bool) -> None:
    """The latest signed tree head, and the local log's size and root."""
    with _ledger(home) as ledger:
        size, root, head = ledger.size, ledger.root(), ledger.latest_head()
    raft = _daemon_ledger_status(home)
    data = {"size": size, "root": root.hex(),
            "signed_head": head.to_json() if head is not None else None, "region": raft}
    if as_json:
        print_json(data)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_row("[bold]ledger entries[/]", str(size))
    grid.add_row("[bold]root[/]", root.hex())
    if head is None:
        grid.add_row("[bold]signed head[/]", "none yet")
    else:
        grid.add_row("[bold]signed head[/]", f"size {head.size}, log {head.log_id}")
        grid.add_row("[bold]  root[/]", head.root.hex())
        grid.add_row("[bold]  signer[/]", head.signer)
        grid.add_row("[bold]  timestamp[/]", f"{iso_ms(head.timestamp)} ({head.timestamp})")
    if raft is None:
        grid.add_row("[bold]ordering[/]", "no daemon running")
    elif raft.get("mode") == "solo":
        grid.add_row("[bold]ordering[/]", "region of one (this node orders its ledger)")
    else:
        grid.add_row("[bold]raft[/]", f"{raft['role']}, term {raft['term']}, commit "
                     f"{raft['commit']}, applied {raft['applied']}")
        grid.add_row("", RAFT_INDEX_NOTE)
        grid.add_row("[bold]  leader[/]", raft["leader"] or "unknown")
        grid.add_row("[bold]  voters[/]", ", ".join(raft["voters"]))
        if raft["learners"]:
            grid.add_row("[bold]  learners[/]", ", ".join(raft["learners"]))
        if raft["queued"] or raft["inflight"]:
            grid.add_row("[bold]  waiting[/]", f"{raft['queued']} queued, "
                         f"{raft['inflight']} batches in flight")
    console.print(grid, highlight=False)


def _daemon_ledger_status(home: Path | None) -> dict[str, Any] | None:
    """The running daemon's Raft view (`ledger_status`), or None with no daemon."""
    from gd.node.control import ControlError, call

    try:
        status = call(resolve_home(home), "ledger_status", timeout=DAEMON_STATUS_TIMEOUT_S)
    except ControlError:
        return None
    return status if isinstance(status, dict) else None


def _pinned_signers(home: Path | None, voters: tuple[str, ...]
                    ) -> tuple[frozenset[str] | None, str]:
    """Who may sign this ledger's heads, and where that came from.

    Anyone who can rewrite the log can also sign a head with a key of their own, so a
    head proves the order only when its signer is pinned: `--voter` ids, else the
    config's `[ledger] voters`, else (a region of one) this node's own key. With no
    config at all (a copied Cortex) nothing is pinned and the report says so.
    """
    if voters:
        for voter in voters:
            if not is_peer_id(voter):
                raise Failure(f"--voter {voter!r} is not an Ed25519 peer id")
        return frozenset(voters), "--voter"
    resolved = resolve_home(home)
    if not resolved.config_path.exists():
        return None, "nothing (no config.toml: pass --voter to pin the signers)"
    cfg = load_config(resolved.config_path)
    if cfg.ledger_voters:
        return frozenset(cfg.ledger_voters), "[ledger] voters"
    try:
        own = NodeKey.load(resolved.key_path).peer_id
    except (OSError, ValueError) as exc:
        raise Failure(f"cannot read this node's key to pin it as the signer ({exc}); "
                      "pass --voter") from None
    return frozenset({own}), "this node (a region of one)"


@ledger_group.command("verify")
@click.option("--voter", "voters", multiple=True, metavar="PEER_ID",
              help="Pin a head signer (repeat for each voter); default: the config's "
                   "[ledger] voters, or this node for a region of one.")
@ledger_command
def verify_cmd(home: Path | None, voters: tuple[str, ...], as_json: bool) -> None:
    """Recompute chain links, signatures, the Merkle tree, the idempotency index and
    every signed head's root, and check each head is signed by a pinned voter.

    Exit code 1 and the first bad index with the reason if anything does not hold
    (including: no signed head at all while signers are pinned).
    """
    trusted, source = _pinned_signers(home, voters)
    with _ledger(home) as ledger:
        report = ledger.verify(trusted, require_head=trusted is not None)
    if as_json:
        print_json({**report.to_json(), "pinned_signers": sorted(trusted or ()),
                    "pinned_by": source})
    elif report.ok:
        console.print(f"ok: {report.checked} entries, {report.heads_checked} signed head(s), "
                      f"root {report.root.hex()}", highlight=False)
        console.print(f"head signers pinned by: {source}", highlight=False)
        for note in report.notes:
            console.print(f"note: {note}", highlight=False)
    if not report.ok:
        raise Failure(f"entry {report.first_bad_index}: {report.reason}")


@ledger_group.command("proof")
@click.argument("index", type=click.IntRange(min=0))
@click.option("--size", type=click.IntRange(min=1), default=None,
              help="Prove against the tree of this size (default: the whole log).")
@ledger_command
@_or_verify("an inclusion", lambda **given: _verify_inclusion_document(**given))
def proof_cmd(index: int, size: int | None, home: Path | None, as_json: bool) -> None:
    """Inclusion proof (audit path) that entry INDEX is in the log of --size entries."""
    with _ledger(home) as ledger:
        proof = ledger.inclusion_proof(index, size)
        doc: dict[str, Any] = {
            "index": index, "size": proof.size, "leaf_hash": ledger.leaf_hash(index).hex(),
            "root": ledger.root(proof.size).hex(), "path": [h.hex() for h in proof.path]}
    _print_proof(doc, as_json, f"entry {index} in the log of {doc['size']} entries",
                 f"leaf {doc['leaf_hash']}\nroot {doc['root']}")


def _print_proof(doc: dict[str, Any], as_json: bool, claim: str, hashes: str) -> None:
    """A proof document: as JSON, or what it claims, the hashes it ties, and its path."""
    if as_json:
        print_json(doc)
        return
    console.print(f"{claim} ({len(doc['path'])} hashes)", highlight=False)
    console.print(hashes, highlight=False)
    for i, value in enumerate(doc["path"]):
        console.print(f"  {i:2d} {value}", highlight=False)


def _verify_inclusion_document(index: int, size: int | None, doc: dict[str, Any],
                               home: Path | None, as_json: bool) -> None:
    doc_index, doc_size = _uint(doc, "index"), _uint(doc, "size")
    leaf, root, path = _unhex(doc, "leaf_hash"), _unhex(doc, "root"), _path(doc)
    if doc_index != index:
        raise Failure(f"the document proves entry {doc_index}, not {index}")
    if size is not None and size != doc_size:
        raise Failure(f"the document is for size {doc_size}, not {size}")
    _proof_holds(verify_inclusion, leaf, index, doc_size, path, root)
    with _ledger(home) as ledger:
        local_size = ledger.size
        local = (ledger.root(doc_size), ledger.leaf_hash(index)) if doc_size <= local_size \
            else None
    _report_match(local is not None and local == (root, leaf), local is None, local_size,
                  {"index": index, "size": doc_size}, as_json)


def _report_match(matches: bool, beyond: bool, local_size: int, what: dict[str, Any],
                  as_json: bool) -> None:
    result = {**what, "proof_valid": True, "local_size": local_size,
              "matches_local": None if beyond else matches}
    if as_json:
        print_json(result)
    elif beyond:
        console.print(f"proof is valid; this ledger has only {local_size} entries, so it "
                      "was checked against its own root only", highlight=False)
    elif matches:
        console.print("proof is valid and matches this ledger", highlight=False)
    if not beyond and not matches:
        raise Failure("proof is valid but names a root or leaf this ledger does not have: "
                      "the two logs have forked")


@ledger_group.command("consistency")
@click.argument("old_size", metavar="M", type=click.IntRange(min=0))
@click.argument("new_size", metavar="N", type=click.IntRange(min=0))
@ledger_command
@_or_verify("a consistency", lambda **given: _verify_consistency_document(**given))
def consistency_cmd(old_size: int, new_size: int, home: Path | None, as_json: bool) -> None:
    """Consistency proof that the log of N entries extends the log of M entries."""
    with _ledger(home) as ledger:
        proof = ledger.consistency_proof(old_size, new_size)
        doc: dict[str, Any] = {
            "old_size": old_size, "new_size": new_size,
            "old_root": ledger.root(old_size).hex(), "new_root": ledger.root(new_size).hex(),
            "path": [h.hex() for h in proof.path]}
    _print_proof(doc, as_json, f"log of {new_size} extends log of {old_size}",
                 f"old root {doc['old_root']}\nnew root {doc['new_root']}")


def _verify_consistency_document(old_size: int, new_size: int, doc: dict[str, Any],
                                 home: Path | None, as_json: bool) -> None:
    sizes = (_uint(doc, "old_size"), _uint(doc, "new_size"))
    old_root, new_root, path = _unhex(doc, "old_root"), _unhex(doc, "new_root"), _path(doc)
    if sizes != (old_size, new_size):
        raise Failure(f"the document is for sizes {sizes[0]} -> {sizes[1]}, "
                      f"not {old_size} -> {new_size}")
    _proof_holds(verify_consistency, old_size, new_size, old_root, new_root, path)
    with _ledger(home) as ledger:
        local_size = ledger.size
        beyond = new_size > local_size
        local = None if beyond else (ledger.root(old_size), ledger.root(new_size))
    _report_match(local == (old_root, new_root), beyond, local_size,
                  {"old_size": old_size, "new_size": new_size}, as_json)


@ledger_group.command("show")
@click.argument("index", type=click.IntRange(min=0))
@ledger_command
def show_cmd(index: int, home: Path | None, as_json: bool) -> None:
    """One entry: kind, author, time, payload hash, summary, links and signature."""
    with _ledger(home) as ledger:
        data = ledger.entry(index).to_json()
    if as_json:
        print_json(data)
        return
    grid = Table.grid(padding=(0, 2))
    for field in ("index", "kind", "author", "hlc", "payload_hash", "idempotency_key",
                  "prev_hash", "entry_hash", "signature"):
        grid.add_row(f"[bold]{field}[/]", str(data[field]))
    summary = ", ".join(f"{k}={v}" for k, v in data["summary"].items()) or "-"
    grid.add_row("[bold]summary[/]", summary)
    console.print(grid, highlight=False)


@ledger_group.command("export")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json",
              show_default=True, help="json: one JSON array; csv: a header and one row each.")
@click.option("--since", type=click.IntRange(min=0), default=0, show_default=True,
              help="First index to export.")
@node_command(LedgerError, with_json=False)
def export_cmd(fmt: str, since: int, home: Path | None) -> None:
    """Write entries from --since on to stdout, streamed from one consistent snapshot."""
    out = sys.stdout
    with _ledger(home) as ledger:
        if fmt == "json":
            out.write("[")
            for i, entry in enumerate(ledger.entries(since)):
                out.write(("\n" if i == 0 else ",\n") + json.dumps(entry.to_json(),
                                                                    sort_keys=True))
            out.write("\n]\n")
        else:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            for entry in ledger.entries(since):
                row = entry.to_json()
                row["summary"] = json.dumps(row["summary"], sort_keys=True)
                writer.writerow([row[c] for c in CSV_COLUMNS])
    out.flush()


@ledger_group.command("alarms")
@ledger_command
def alarms_cmd(home: Path | None, as_json: bool) -> None:
    """Fork alarms recorded by this node (heads from peers that do not fit together)."""
    with _ledger(home) as ledger:
        alarms = [a.to_json() for a in ledger.alarms()]
    if as_json:
        print_json(alarms)
        return
    if not alarms:
        console.print("no fork alarms")
        return
    for alarm in alarms:
        who = "equivocation by one signer" if alarm["equivocation"] else "two signers"
        source = alarm["source"] or "?"
        via = f"gossip from {source}" if source not in ("?", "local") else source
        console.print(f"[bold red]{alarm['kind']}[/] ({who}, {via}): {alarm['detail']}",
                      highlight=False)
