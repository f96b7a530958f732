"""Every CLI command of the foundation on a temporary home."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gd.cli.main import cli

GOOD = {"domain": "turbofan", "name": "inspect-when-hot",
        "codons": [{"feature": "s11", "op": ">", "threshold": 47.6}], "action": "inspect",
        "params": {}, "purpose": "avoid unplanned failure"}


def run(*args: str, ok: bool = True) -> object:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    run("init", "--home", str(h), "--org", "acme", "--region", "eu-west")
    return h


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_init_creates_key_config_and_cortex(home: Path) -> None:
    assert (home / "node.key").stat().st_mode & 0o777 == 0o600
    assert "org = \"acme\"" in (home / "config.toml").read_text()
    assert (home / "cortex" / "data.mdb").exists()
    again = run("init", "--home", str(home), "--org", "x", "--region", "y", ok=False)
    assert again.exit_code == 1 and "already exists" in again.output


def test_init_rejects_bad_arguments_with_usage_code(tmp_path: Path) -> None:
    result = run("init", "--home", str(tmp_path / "h"), "--org", "a", "--region", "Bad Region",
                 ok=False)
    assert result.exit_code == 2 and "--region" in result.output
    assert not (tmp_path / "h" / "node.key").exists()
    missing = run("init", "--home", str(tmp_path / "h"), ok=False)
    assert missing.exit_code == 2


def test_status_json_has_identity(home: Path) -> None:
    data = json.loads(run("status", "--home", str(home), "--json").output)
    assert data["peer_id"].startswith("12D3KooW")
    assert (data["org"], data["region"]) == ("acme", "eu-west")
    assert data["listen"] == ["/ip4/127.0.0.1/tcp/0"]
    assert data["daemon"]["running"] is False and data["cortex"]["genes"] == 0


def test_status_on_uninitialised_home_fails_cleanly(tmp_path: Path) -> None:
    result = run("status", "--home", str(tmp_path / "none"), ok=False)
    assert result.exit_code == 1 and "gd-node init" in result.output


def test_import_list_show_and_reimport(home: Path, tmp_path: Path) -> None:
    second = dict(GOOD, name="overhaul", action="overhaul",
                  synapses=[{"target": "inspect-when-hot", "kind": "follows", "weight": 0.4}])
    path = write_jsonl(tmp_path / "g.jsonl", [GOOD, second])
    out = json.loads(run("genes", "import", str(path), "--home", str(home), "--json").output)
    assert (out["added"], out["synapses"], out["rejected"]) == (2, 1, [])
    listed = json.loads(run("genes", "list", "--home", str(home), "--json").output)
    assert sorted(g["name"] for g in listed) == ["inspect-when-hot", "overhaul"]
    gid = next(g["id"] for g in listed if g["name"] == "overhaul")
    shown = json.loads(run("genes", "show", gid, "--home", str(home), "--json").output)
    assert shown["synapses"][0]["kind"] == "follows" and shown["versions"] == [1]
    assert "s11 > 47.6" in run("genes", "show", gid, "--home", str(home)).output
    again = json.loads(run("genes", "import", str(path), "--home", str(home), "--json").output)
    assert (again["added"], again["unchanged"]) == (0, 2)
    edited = write_jsonl(tmp_path / "e.jsonl", [dict(GOOD, action="overhaul")])
    upd = json.loads(run("genes", "import", str(edited), "--home", str(home), "--json").output)
    assert upd["updated"] == 1
    assert json.loads(run("genes", "list", "--home", str(home), "--domain", "loan",
                          "--json").output) == []


def test_bad_import_lines_are_reported_and_the_rest_imported(home: Path, tmp_path: Path) -> None:
    rows = [
        GOOD,
        "{not json",
        dict(GOOD, name="bad-op", codons=[{"feature": "s11", "op": "=>", "threshold": 1}]),
        dict(GOOD, name="nan", codons=[{"feature": "s11", "op": ">", "threshold": "NaN"}]),
        dict(GOOD, name="empty", codons=[]),
        dict(GOOD, name="x" * 300),
        {k: v for k, v in GOOD.items() if k != "action"},
        dict(GOOD, name="typo", acton="inspect"),
        dict(GOOD, name="fine-2"),
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    result = run("genes", "import", str(path), "--home", str(home), "--json", ok=False)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["added"] == 2
    lines = {r["line"]: r["reason"] for r in report["rejected"]}
    assert set(lines) == {2, 3, 4, 5, 6, 7, 8}
    assert "JSON" in lines[2] and "op" in lines[3] and "threshold" in lines[4]
    assert "codons" in lines[5] and "name" in lines[6] and "action" in lines[7]
    assert "acton" in lines[8]


def test_csv_import(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "g.csv"
    path.write_text(
        "domain,name,codons,action,params,purpose\n"
        'turbofan,hot,s11 > 47.6; s4 > 1420,inspect,"{""crew"": 2}",safety\n'
        "turbofan,broken,s11 >> 1,inspect,,\n"
        "loan,ok,credit_score >= 650,standard_offer,,\n"
    )
    result = run("genes", "import", str(path), "--home", str(home), "--json", ok=False)
    report = json.loads(result.stdout)
    assert report["added"] == 2 and [r["line"] for r in report["rejected"]] == [3]
    shown = json.loads(run("genes", "list", "--home", str(home), "--domain", "turbofan",
                           "--json").output)
    assert shown[0]["params"] == {"crew": 2} and len(shown[0]["codons"]) == 2


def test_synapse_add_and_list(home: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "g.jsonl", [GOOD, dict(GOOD, name="b")])
    run("genes", "import", str(path), "--home", str(home))
    ids = [g["id"] for g in json.loads(run("genes", "list", "--home", str(home),
                                           "--json").output)]
    run("synapse", "add", ids[0], ids[1], "--kind", "inhibits", "--weight", "0.3",
        "--home", str(home))
    near = json.loads(run("synapse", "list", ids[1], "--home", str(home), "--json").output)
    assert near == {ids[0]: 1}
    bad = run("synapse", "add", ids[0], "f" * 32, "--kind", "follows", "--home", str(home),
              ok=False)
    assert bad.exit_code == 1 and "no gene" in bad.output
    usage = run("synapse", "add", ids[0], ids[1], "--kind", "likes", "--home", str(home),
                ok=False)
    assert usage.exit_code == 2


def test_backup_and_restore(home: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "g.jsonl", [GOOD])
    run("genes", "import", str(path), "--home", str(home))
    run("backup", str(tmp_path / "bk"), "--home", str(home))
    write_jsonl(tmp_path / "g2.jsonl", [dict(GOOD, name="later")])
    run("genes", "import", str(tmp_path / "g2.jsonl"), "--home", str(home))
    out = json.loads(run("restore", str(tmp_path / "bk"), "--home", str(home), "--json").output)
    assert out["previous"].endswith("cortex.pre-restore-1")
    names = [g["name"] for g in json.loads(run("genes", "list", "--home", str(home),
                                               "--json").output)]
    assert names == ["inspect-when-hot"]
    bad = run("restore", str(tmp_path), "--home", str(home), ok=False)
    assert bad.exit_code == 1


def test_show_unknown_gene_fails_without_traceback(home: Path) -> None:
    result = run("genes", "show", "nope", "--home", str(home), ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_demo_home_is_idempotent(tmp_path: Path) -> None:
    first = json.loads(run("demo", "--dir", str(tmp_path / "d"), "--json").output)
    second = json.loads(run("demo", "--dir", str(tmp_path / "d"), "--json").output)
    assert first["added"] >= 5 and second["added"] == 0
    assert second["unchanged"] == first["added"]


def test_run_daemon_locks_home_and_stops_cleanly_on_sigterm(home: Path) -> None:
    exe = [sys.executable, "-c", "from gd.cli.main import main; main()"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([*exe, "run", "--home", str(home), "--log-format", "json"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        seen = ""
        while "peer id:" not in seen and time.monotonic() < deadline:
            seen += proc.stderr.readline()
        assert "peer id:" in seen
        second = subprocess.run([*exe, "run", "--home", str(home)], capture_output=True,
                                text=True, timeout=30)
        assert second.returncode == 1 and "already runs" in second.stderr
        # one clear line, no log lines of a node that never started (issue 13, item 10)
        assert "node.closed" not in second.stderr and second.stderr.count("\n") == 1
        status = json.loads(run("status", "--home", str(home), "--json").output)
        assert (status["daemon"]["running"], status["daemon"]["pid"]) == (True, proc.pid)
        assert status["daemon"]["addrs"] and "/tcp/0" not in status["daemon"]["addrs"][0]
        assert status["daemon"]["peers"] == 0
        assert "addresses" in run("status", "--home", str(home)).output
        restore = run("restore", str(home / "cortex"), "--home", str(home), ok=False)
        assert restore.exit_code == 1 and "stop it first" in restore.output
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        log = proc.stderr.read()
        assert '"event": "node.stopped"' in log and '"event": "node.closed"' in log
        assert not (home / "gd-node.pid").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
