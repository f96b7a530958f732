"""`gd-node org`: an org key certifies a node, another node pins the org key; bad input
is a clear error, never a traceback; [trust] config entries are checked."""

from __future__ import annotations

import json
import re
import stat
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gd.cli.main import cli
from gd.genome.certificate import check_certificate, parse_org_key
from gd.node.config import ConfigError, parse_config
from gd.node.credentials import CERT_FILE, load_credentials, read_certificate
from gd.node.home import Home
from gd.node.local import load_identity


def run(*args: str, ok: bool = True) -> Result:
    result = CliRunner().invoke(cli, list(args))
    assert (result.exit_code == 0) is ok, result.output
    assert "Traceback" not in result.output
    return result


def test_org_key_certifies_a_node_that_a_partner_then_trusts(tmp_path: Path) -> None:
    org_dir, beta, acme = tmp_path / "beta-org", tmp_path / "beta", tmp_path / "acme"
    run("init", "--home", str(beta), "--org", "beta", "--region", "eu-west")
    run("init", "--home", str(acme), "--org", "acme", "--region", "eu-west")
    made = json.loads(run("org", "init", "--dir", str(org_dir), "--org", "beta",
                          "--json").output)
    assert stat.S_IMODE((org_dir / "org.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(org_dir.stat().st_mode) == 0o700
    run("org", "certify", "--org-key", str(org_dir), "--home", str(beta), "--expires", "30d")
    run("org", "trust", "beta", made["public_key"], "--home", str(acme))
    listed = json.loads(run("org", "list", "--home", str(acme), "--json").output)
    assert [(r["org"], r["key"]) for r in listed["trusted"]] == [("beta", made["public_key"])]

    cfg, key = load_identity(Home.resolve(acme))
    trust = load_credentials(acme, cfg, key, None).trust
    beta_cfg, beta_key = load_identity(Home.resolve(beta))
    cert = read_certificate(beta / CERT_FILE)
    assert cert.expires_ms - cert.not_before_ms == 30 * 24 * 3600 * 1000
    assert check_certificate(cert.encode(), peer_id=beta_key.peer_id, org="beta",
                             region="eu-west", trust=trust,
                             now_ms=cert.not_before_ms).org_key == parse_org_key(
                                 made["public_key"])
    assert load_credentials(beta, beta_cfg, beta_key, None).certificate == cert.encode()
    run("org", "untrust", "beta", "--home", str(acme))
    assert not load_credentials(acme, cfg, key, None).trust


def test_mistakes_are_clear_errors(tmp_path: Path) -> None:
    org_dir, node = tmp_path / "org", tmp_path / "node"
    run("init", "--home", str(node), "--org", "acme", "--region", "eu-west")
    run("org", "init", "--dir", str(org_dir), "--org", "beta")
    again = run("org", "init", "--dir", str(org_dir), "--org", "beta", ok=False)
    assert "never replaced" in again.output
    wrong = run("org", "certify", "--org-key", str(org_dir), "--home", str(node), ok=False)
    assert "configured for org 'acme'" in wrong.output
    assert "expected days or hours" in run("org", "certify", "--org-key", str(org_dir),
                                           "--out", str(tmp_path / "c"), "--peer", "x",
                                           "--region", "eu", "--expires", "forever",
                                           ok=False).output
    assert "not an Ed25519 peer id" in run("org", "certify", "--org-key", str(org_dir),
                                           "--out", str(tmp_path / "c"), "--peer", "x",
                                           "--region", "eu", ok=False).output
    assert "not ed25519" in run("org", "trust", "beta", "ed25519:zz", "--home", str(node),
                                ok=False).output
    # A certificate of another node in this home stops the daemon's start with a reason.
    other = json.loads(run("org", "init", "--dir", str(tmp_path / "acme-org"), "--org",
                           "acme", "--json").output)
    assert other["fingerprint"]
    run("org", "certify", "--org-key", str(tmp_path / "acme-org"), "--out",
        str(node / CERT_FILE), "--peer", "12D3KooWGRYZDHBembyGJQqQ6WgLqJWYPvGLQcSQ5XvAqTNUeFUD",
        "--region", "eu-west")
    cfg, key = load_identity(Home.resolve(node))
    with pytest.raises(ConfigError, match="not this node"):
        load_credentials(node, cfg, key, None)


@pytest.mark.parametrize(("orgs", "message"), [
    ('"beta"', "expected a table"),
    ('{beta = "ed25519:00"}', "1 bytes"),
    ('{beta = []}', "expected an org key"),
    ('{"" = "ed25519:' + "00" * 32 + '"}', "must not be empty"),
])
def test_bad_trust_entries_name_the_problem(orgs: str, message: str) -> None:
    text = f"[node]\norg='a'\nregion='eu'\n[trust]\norgs = {orgs}\n"
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(tomllib.loads(text))
