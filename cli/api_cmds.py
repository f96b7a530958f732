"""`gd-node tokens ...` and `gd-node jobs ...`: credentials and durable jobs of the HTTP
API (docs/api.md).

Reads open the Cortex directly. Writes (create, revoke, cancel) have one writer (ADR
0022): the running daemon over its control socket, or this process under the home's
lock when none runs. The API reads a token's record on every request, so a revoked token
is refused from its very next one; a cancel reaches a running job at its next step.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from gd.cli.output import (
    Failure,
    console,
    emit,
    err_console,
    node_command,
    print_json,
    print_rows,
    resolve_home,
)
from gd.cli.writer import write
from gd.node.api.job_store import STATES, JobError, JobStore
from gd.node.api.roles import Role
from gd.node.api.tokens import TokenError, TokenStore, parse_duration
from gd.node.local import open_local

api_command = node_command(TokenError, JobError)


def _when(ms: int) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


@click.group("tokens")
def tokens_group() -> None:
    """API tokens: create (the secret is printed once), list, revoke."""


@tokens_group.command("create")
@click.option("--role", required=True, type=click.Choice([r.label for r in Role]),
              help="viewer < operator < approver < admin.")
@click.option("--domain", "domains", multiple=True, required=True,
              help="A domain the token covers (repeat), or * for every domain.")
@click.option("--gene", "genes", multiple=True, help="Only these genes (repeat).")
@click.option("--expires", default=None, metavar="30d|12h|90m",
              help="Lifetime (default: until revoked).")
@click.option("--label", default="", help="A note for `tokens list`.")
@api_command
def tokens_create_cmd(role: str, domains: tuple[str, ...], genes: tuple[str, ...],
                      expires: str | None, label: str, home: Path | None,
                      as_json: bool) -> None:
    """Create a token. Its secret is shown now and never again (only a hash is kept)."""
    seconds = parse_duration(expires) if expires is not None else None
    data = write(home, "tokens_create", role=role, domains=list(domains),
                 genes=list(genes), expires_in_s=seconds, label=label)
    if as_json:
        print_json(data)
        return
    console.print(f"token {data['id']}: {data['role']} on {', '.join(data['domains'])}"
                  + (f", expires {_when(data['expires_ms'])} UTC" if data["expires_ms"] else ""))
    err_console.print("the secret (shown once; store it now):")
    click.echo(data["token"])


@tokens_group.command("list")
@api_command
def tokens_list_cmd(home: Path | None, as_json: bool) -> None:
    """Tokens with their role, scope and state (never their secrets)."""
    with open_local(resolve_home(home)) as node:  # a read (read-write: makes the table)
        store = TokenStore(node.cortex)
        rows = [t.to_json(store.now_ms()) for t in store.list()]
    print_rows(rows, as_json, f"{len(rows)} token(s)",
               ("id", "role", "domains", "state", "created", "expires", "label"),
               lambda t: (t["id"], t["role"], ",".join(t["domains"]), t["state"],
                          _when(t["created_ms"]), _when(t["expires_ms"]), t["label"]))


@tokens_group.command("revoke")
@click.argument("token_id")
@api_command
def tokens_revoke_cmd(token_id: str, home: Path | None, as_json: bool) -> None:
    """Revoke TOKEN_ID: the daemon refuses it from its next request on."""
    data = write(home, "tokens_revoke", token_id=token_id)
    emit(data, as_json, f"token {data['id']} revoked")


@click.group("jobs")
def jobs_group() -> None:
    """Durable jobs (big evaluations, adaptations) queued through the HTTP API."""


def _job_row(job: Any) -> dict[str, Any]:
    return job.to_json()


@jobs_group.command("list")
@click.option("--state", type=click.Choice(STATES), default=None)
@api_command
def jobs_list_cmd(state: str | None, home: Path | None, as_json: bool) -> None:
    """Jobs, newest first."""
    with open_local(resolve_home(home)) as node:  # a read (read-write: makes the table)
        rows = [_job_row(j) for j in reversed(JobStore(node.cortex).list(state))]
    print_rows(rows, as_json, f"{len(rows)} job(s)",
               ("id", "kind", "gene", "state", "progress", "created", "actor"),
               lambda j: (j["id"], j["kind"], j["gene_id"], j["state"],
                          f"{j['done']}/{j['total']}", _when(j["created_ms"]), j["actor"]))


@jobs_group.command("show")
@click.argument("job_id")
@api_command
def jobs_show_cmd(job_id: str, home: Path | None, as_json: bool) -> None:
    """One job: options, progress, result or error, webhook delivery."""
    with open_local(resolve_home(home)) as node:  # a read (read-write: makes the table)
        data = _job_row(JobStore(node.cortex).require(job_id))
    if as_json:
        print_json(data)
        return
    grid = Table.grid(padding=(0, 2))
    for key in ("id", "kind", "gene_id", "state", "done", "total", "attempts", "actor",
                "error", "webhook_url", "webhook_delivered", "webhook_error"):
        grid.add_row(f"[bold]{key}[/]", str(data[key]))
    grid.add_row("[bold]verdicts[/]", str(data["result"].get("verdicts", "-")))
    console.print(grid)


@jobs_group.command("cancel")
@click.argument("job_id")
@api_command
def jobs_cancel_cmd(job_id: str, home: Path | None, as_json: bool) -> None:
    """Cancel a queued job now, or a running one at its next step."""
    data = write(home, "jobs_cancel", job_id=job_id)
    if as_json:
        print_json(data)
    elif data["state"] == "cancelled":
        console.print(f"job {data['id']} cancelled")
    else:
        console.print(f"job {data['id']} will stop at its next step")
    if data["state"] not in ("cancelled", "running"):
        raise Failure(f"job {data['id']} is {data['state']}")


COMMANDS: list[click.Command] = [tokens_group, jobs_group]
