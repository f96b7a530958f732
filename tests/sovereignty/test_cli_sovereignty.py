"""The sovereignty commands on a temporary home, through click's runner."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from gd_testkit import key_from_int

from gd.cli.main import cli as main_cli
from gd.cli.sovereignty_cmds import COMMANDS, forget_cmd
from gd.node.store.audit import AUDIT_DB
from gd.node.store.cortex import Cortex

PEER = key_from_int(401).peer_id


def test_every_sovereignty_command_is_mounted_on_gd_node() -> None:
    genes = main_cli.commands["genes"]
    assert genes.commands["forget"] is forget_cmd
    for command in COMMANDS:
        if command is not forget_cmd:
            assert main_cli.commands[command.name] is command


def run(*args: str, ok: bool = True, group: click.Group = main_cli) -> Result:
    result = CliRunner().invoke(group, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def jrun(*args: str) -> object:
    return json.loads(run(*args, "--json").output)


@pytest.fixture
def home(tmp_path: Path) -> str:
    h = tmp_path / "home"
    run("init", "--home", str(h), "--org", "acme", "--region", "eu-west")
    return str(h)


def import_pending(home: str, tmp_path: Path, *names: str) -> list[dict]:
    path = tmp_path / "g.jsonl"
    path.write_text("\n".join(json.dumps(
        {"domain": "turbofan", "name": n, "codons": [{"feature": "s11", "op": ">",
                                                      "threshold": 40.0 + i}],
         "action": "inspect"}) for i, n in enumerate(names)) + "\n")
    run("genes", "import", str(path), "--pending", "--home", home, group=main_cli)
    return json.loads(run("genes", "list", "--home", home, "--json", group=main_cli).output)


def test_share_list_revoke_and_agreements(home: str) -> None:
    out = jrun("share", "--with", PEER, "--domain", "turbofan", "--anonymize", "--home", home)
    assert out["rule"] == f"allow:both:turbofan:{PEER}"
    assert [a["state"] for a in out["agreements"]] == ["proposed"]
    run("share", "--with", "region:us-east", "--domain", "*", "--deny", "--home", home)
    rules = jrun("policy", "list", "--home", home)["rules"]
    assert {(r["effect"], r["subject"], r["anonymize"]) for r in rules} == {
        ("allow", PEER, True), ("deny", "region:us-east", False)}
    (agreement,) = jrun("agreements", "list", "--home", home)
    assert agreement["peer"] == PEER and agreement["state"] == "proposed"
    assert jrun("revoke", "--with", PEER, "--domain", "turbofan", "--home", home) == {
        "removed": [f"allow:both:turbofan:{PEER}"]}
    (agreement,) = jrun("agreements", "list", "--home", home)
    assert agreement["state"] == "revoked"
    again = run("revoke", "--with", PEER, "--domain", "turbofan", "--home", home, ok=False)
    assert again.exit_code == 1 and "no share rule" in again.output
    assert "region:us-east" in run("policy", "list", "--home", home).output


def test_bad_arguments_fail_cleanly_and_change_nothing(home: str) -> None:
    bad = run("share", "--with", "nobody", "--domain", "turbofan", "--home", home, ok=False)
    assert bad.exit_code == 1 and "neither a peer id" in bad.output
    usage = run("share", "--with", PEER, "--domain", "x", "--direction", "up", "--home", home,
                ok=False)
    assert usage.exit_code == 2
    assert jrun("policy", "list", "--home", home)["rules"] == []


def test_policy_test_explains_the_deciding_rule(home: str, tmp_path: Path) -> None:
    (gene,) = import_pending(home, tmp_path, "hot")
    run("share", "--with", "org:bobco", "--domain", "turbofan", "--home", home)
    (decision,) = jrun("policy", "test", "--with", PEER, "--org", "bobco", "--region",
                       "eu-west", "--gene", gene["id"], "--home", home)
    # Unapproved genes never leave the node, whatever the agreements say.
    assert decision["allowed"] is False and "only native genes" in decision["reason"]
    run("approve", gene["id"], "--home", home)
    (decision,) = jrun("policy", "test", "--with", PEER, "--org", "bobco", "--region",
                       "eu-west", "--gene", gene["id"], "--home", home)
    assert decision["allowed"] is False and "mutual consent" in decision["reason"]
    assert any("allowed by rule allow:both:turbofan:org:bobco" in s for s in decision["steps"])
    text = run("policy", "test", "--with", PEER, "--gene", gene["id"], "--home", home).output
    assert "WITHHOLD" in text
    none = run("policy", "test", "--with", "org:bobco", "--gene", gene["id"], "--home", home,
               ok=False)
    assert none.exit_code == 1 and "no known peer" in none.output


def test_residency_rule_round_trip(home: str) -> None:
    out = jrun("policy", "residency", "--domain", "turbofan", "--region", "eu-west",
               "--home", home)
    assert out["changed"] is True
    assert jrun("policy", "list", "--home", home)["residency"] == [
        {"domain": "turbofan", "region": "eu-west"}]
    jrun("policy", "residency", "--domain", "turbofan", "--region", "eu-west", "--remove",
         "--home", home)
    assert jrun("policy", "list", "--home", home)["residency"] == []


def test_pending_approve_reject_rollback_forget(home: str, tmp_path: Path) -> None:
    genes = import_pending(home, tmp_path, "a", "b", "c")
    ids = sorted(g["id"] for g in genes)
    assert sorted(g["id"] for g in jrun("pending", "list", "--home", home)) == ids
    shown = jrun("pending", "show", ids[0], "--home", home)
    assert shown["original"]["id"] == ids[0] and shown["variants"] == []
    assert jrun("approve", ids[0], "--home", home)[0]["status"] == "native"
    assert jrun("reject", ids[1], "--reason", "not for us", "--home", home)["status"] == \
        "rejected"
    failed = run("approve", ids[1], "--home", home, ok=False)
    assert failed.exit_code == 1 and "not adaptation_pending" in failed.output
    no_earlier = run("rollback", ids[0], "--to", "1", "--home", home, ok=False)
    assert no_earlier.exit_code == 1 and "roll back to one of" in no_earlier.output
    out = jrun("genes", "forget", ids[2], "--home", home)
    assert out == {"forgotten": ids[2], "tombstones_for": []}
    assert [g["id"] for g in jrun("pending", "list", "--home", home)] == []
    records = json.loads(run("audit", "export", "--format", "json", "--home", home).output)
    kinds = [r["kind"] for r in records]
    assert kinds.count("adaptation") == 2 and "forget" in kinds
    assert "ledger_record" not in kinds  # approvals go to the ledger itself now
    ledger = json.loads(run("ledger", "export", "--format", "json", "--home", home).output)
    assert [e["kind"] for e in ledger] == ["promotion", "promotion"]  # approve, reject
    assert json.loads(run("ledger", "verify", "--home", home, "--json").output)["ok"] is True
    assert jrun("audit", "verify", "--home", home)["ok"] is True


def test_rollback_from_the_cli(home: str, tmp_path: Path) -> None:
    (gene,) = import_pending(home, tmp_path, "x")
    path = tmp_path / "g.jsonl"
    path.write_text(path.read_text().replace("40.0", "55.5"))
    run("genes", "import", str(path), "--pending", "--home", home, group=main_cli)
    out = jrun("rollback", gene["id"], "--to", "1", "--home", home)
    assert out["version"] == 3 and out["condition"] == "s11 > 40"


def test_audit_export_csv_since_and_verify_detects_tampering(home: str) -> None:
    run("share", "--with", "org:bobco", "--domain", "turbofan", "--home", home)
    run("share", "--with", "org:bobco", "--domain", "loan", "--home", home)
    csv_text = run("audit", "export", "--format", "csv", "--home", home).output
    assert csv_text.splitlines()[0].startswith("index,time_ms,kind") and \
        len(csv_text.splitlines()) == 3
    later = run("audit", "export", "--since", "2999-01-01", "--home", home).output
    assert json.loads(later) == []
    bad_since = run("audit", "export", "--since", "yesterday", "--home", home, ok=False)
    assert bad_since.exit_code == 2
    with Cortex.open(Path(home) / "cortex") as cortex:
        db = cortex.open_db(AUDIT_DB)
        with cortex.env.begin(write=True) as txn:
            key = struct.pack(">Q", 1)
            raw = bytearray(txn.get(key, db=db))
            raw[-45] ^= 0x40
            txn.put(key, bytes(raw), db=db)
    broken = run("audit", "verify", "--home", home, ok=False)
    assert broken.exit_code == 1 and "record 1" in broken.output
    assert json.loads(run("audit", "verify", "--home", home, "--json", ok=False).output)[
        "bad_index"] == 1
