"""`gd-node org`: org keys, node certificates and the org keys a node trusts.

An organisation's key certifies its nodes (peer id, region, expiry), and `org:`/`region:`
share rules match a peer only through such a certificate under an org key the node pins
(docs/adr/0008-org-certificates-and-trust-anchors.md):

    gd-node org init --dir ORGDIR --org beta          # once per org; keep ORGDIR offline
    gd-node org certify --org-key ORGDIR --peer 12D3KooW... --region eu-west --home NODE
    gd-node org trust beta ed25519:<hex> --home OTHER  # on every node that shares with beta
    gd-node org list --home OTHER                      # what this node pins, and its cert
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from gd.cli.output import (
    Failure,
    console,
    json_option,
    node_command,
    print_json,
    resolve_home,
    user_errors_with,
)
from gd.cli.writer import node_writer
from gd.genome.certificate import (
    CertificateError,
    NodeCertificate,
    fingerprint,
    org_key_text,
    parse_org_key,
)
from gd.genome.identity import NodeKey, is_peer_id
from gd.node.credentials import (
    CERT_FILE,
    create_org_dir,
    describe_trust,
    load_org_dir,
    load_trusted_orgs,
    read_certificate,
    write_certificate,
)
from gd.node.local import load_identity

DAY_MS = 24 * 3600 * 1000
_DURATION_RE = re.compile(r"^([1-9][0-9]{0,4})(d|h)$")


def parse_duration_ms(text: str) -> int:
    """`365d` or `12h` in milliseconds; click.BadParameter otherwise."""
    match = _DURATION_RE.match(text.strip())
    if not match:
        raise click.BadParameter(f"{text!r}: expected days or hours such as 365d or 12h")
    count, unit = int(match.group(1)), match.group(2)
    return count * (DAY_MS if unit == "d" else DAY_MS // 24)


def _cert_plain(cert: NodeCertificate) -> dict[str, Any]:
    return {"org": cert.org, "org_key": org_key_text(cert.org_key),
            "org_fingerprint": fingerprint(cert.org_key), "peer_id": cert.peer_id,
            "region": cert.region, "not_before_ms": cert.not_before_ms,
            "expires_ms": cert.expires_ms}


@click.group("org")
def org_group() -> None:
    """Org keys, node certificates and trusted orgs (who may claim org:NAME)."""


@org_group.command("init")
@click.option("--dir", "directory", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the new org key (created 0700; keep it off the nodes).")
@click.option("--org", "org", required=True, help="The organisation's name, as in config.toml.")
@json_option
@user_errors_with()
def init_cmd(directory: Path, org: str, as_json: bool) -> None:
    """Create an org key. Its public key is what other nodes pin for ORG."""
    key = NodeKey.generate()
    create_org_dir(directory, org, key)
    info = {"org": org, "dir": str(directory), "public_key": org_key_text(key.public_key),
            "fingerprint": fingerprint(key.public_key)}
    if as_json:
        print_json(info)
        return
    console.print(f"created org [bold]{org}[/] in {directory}")
    console.print(f"public key:  {info['public_key']}")
    console.print(f"fingerprint: {info['fingerprint']}")
    console.print("pin it on partner nodes: gd-node org trust "
                  f"{org} {info['public_key']} --home NODE", soft_wrap=True)


@org_group.command("certify")
@click.option("--org-key", "org_dir", required=True,
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="The org directory made by `gd-node org init`.")
@click.option("--peer", "peer", default=None, help="Peer id of the node (default: --home's).")
@click.option("--region", "region", default=None,
              help="The node's region (default: the region in --home's config).")
@click.option("--expires", "expires", default="365d", show_default=True,
              help="Validity, in days or hours (365d, 12h).")
@click.option("--out", "out", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Write the certificate here (give it to the node as HOME/node.cert).")
@node_command(CertificateError)
def certify_cmd(org_dir: Path, peer: str | None, region: str | None, expires: str,
                out: Path | None, home: Path | None, as_json: bool) -> None:
    """Issue a node certificate: the org vouches for the peer id and region.

    With --home and no --out, it goes straight into that node's home (restart the daemon
    to offer it). One of --out or --home is required."""
    validity_ms = parse_duration_ms(expires)
    name, key = load_org_dir(org_dir)
    if out is None and home is None:
        raise Failure("say where the certificate goes: --out FILE or --home NODE_HOME")
    if home is not None:
        cfg, node_key = load_identity(resolve_home(home))
        if peer is not None and peer != node_key.peer_id:
            raise Failure(f"--peer {peer} is not the node in {home} ({node_key.peer_id})")
        if cfg.org != name:
            raise Failure(f"the node in {home} is configured for org {cfg.org!r}, this org "
                          f"key is {name!r}")
        peer, region = node_key.peer_id, region or cfg.region
    if peer is None or not is_peer_id(peer):
        raise Failure(f"--peer {peer!r} is not an Ed25519 peer id (12D3KooW...)")
    if region is None:
        raise Failure("--region is required without --home")
    now_ms = int(time.time() * 1000)
    cert = NodeCertificate.issue(key, name, peer, region, not_before_ms=now_ms,
                                 expires_ms=now_ms + validity_ms)
    target = out if out is not None else resolve_home(home).root / CERT_FILE
    write_certificate(target, cert)
    if as_json:
        print_json({**_cert_plain(cert), "file": str(target)})
        return
    console.print(f"{cert.describe()} until {cert.expires_ms} ms; written to {target}",
                  soft_wrap=True)


@org_group.command("trust")
@click.argument("org")
@click.argument("key")
@node_command()
def trust_cmd(org: str, key: str, home: Path | None, as_json: bool) -> None:
    """Pin KEY (ed25519:<hex>, from `org init`) as org ORG's key on this node.

    Compare its fingerprint with the org's by another channel first: whoever holds the
    key can certify nodes as ORG. A running daemon applies it at once (its peers of ORG
    handshake again)."""
    try:
        parse_org_key(key)
    except ValueError as exc:
        raise Failure(str(exc)) from None
    with node_writer(resolve_home(home)) as writer:
        data = writer.run("org_trust", org=org, key=key)
    if as_json:
        print_json(data)
        return
    console.print(f"trusting org {org} key {data['fingerprint']}"
                  + (" (the daemon applied it)" if writer.via_daemon else ""))


@org_group.command("untrust")
@click.argument("org")
@node_command(with_json=False)
def untrust_cmd(org: str, home: Path | None) -> None:
    """Forget the keys pinned for ORG in trusted-orgs.toml (config.toml is left alone).
    A running daemon applies it at once (its peers certified by ORG handshake again)."""
    where = resolve_home(home)
    with node_writer(where) as writer:
        removed = writer.run("org_untrust", org=org)
    if not removed:
        raise Failure(f"no key is pinned for org {org!r} in {where.root}/trusted-orgs.toml")
    console.print(f"no longer trusting org {org}"
                  + (" (the daemon applied it)" if writer.via_daemon else ""))


@org_group.command("list")
@node_command()
def list_cmd(home: Path | None, as_json: bool) -> None:
    """The org keys this node trusts (config.toml and trusted-orgs.toml) and its own
    certificate. Bootstrap-file pins are read by the daemon at start."""
    where = resolve_home(home)
    cfg, key = load_identity(where)
    rows = describe_trust(cfg.trusted_orgs.merged(load_trusted_orgs(where.root)))
    cert_path = where.root / CERT_FILE
    cert = _cert_plain(read_certificate(cert_path)) if cert_path.exists() else None
    if as_json:
        print_json({"trusted": rows, "certificate": cert, "peer_id": key.peer_id})
        return
    table = Table(title="trusted org keys")
    for col in ("org", "fingerprint", "key"):
        table.add_column(col)
    for row in rows:
        table.add_row(row["org"], row["fingerprint"], row["key"])
    console.print(table)
    if cert is None:
        console.print("this node has no certificate: peers treat it as uncertified")
    else:
        console.print(f"certified by org {cert['org']} ({cert['org_fingerprint']}) in "
                      f"{cert['region']} until {cert['expires_ms']} ms")


COMMANDS = [org_group]
