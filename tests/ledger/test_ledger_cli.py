"""`gd-node ledger ...` on a temporary home (the group is invoked directly)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import lmdb
import pytest
from click.testing import CliRunner, Result

from gd.cli.ledger_cmds import ledger_group
from gd.genome import NodeKey
from gd.genome.canonical import sha256
from gd.ledger.entry import EntryKind, LedgerEntry
from gd.node.store.ledger_store import CORTEX_DIR, ENTRIES_DB, open_ledger

SIZE = 11


def run(*args: str, code: int = 0, stdin: str | None = None) -> Result:
    result = CliRunner().invoke(ledger_group, list(args), input=stdin)
    assert result.exit_code == code, (result.output, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result


@pytest.fixture
def home(tmp_path: Path, key: NodeKey) -> Path:
    with open_ledger(tmp_path, readonly=False) as ledger:
        for start in range(0, SIZE, 4):
            batch = [LedgerEntry.create(key, EntryKind.DECISION, 100 + i,
                                        sha256(f"decision-{i}".encode()),
                                        {"verdict": "accept", "cp": i / 10})
                     for i in range(start, min(SIZE, start + 4))]
            ledger.append_batch(batch, head_key=key, timestamp=start, log_id="eu-west")
    return tmp_path


def test_head_shows_size_root_and_signed_head(home: Path, key: NodeKey) -> None:
    data = json.loads(run("head", "--home", str(home), "--json").output)
    assert data["size"] == SIZE
    assert data["signed_head"]["size"] == SIZE
    assert data["signed_head"]["root"] == data["root"]
    assert data["signed_head"]["signer"] == key.peer_id
    assert "entries" in run("head", "--home", str(home)).output


def test_verify_passes_then_names_the_tampered_index(home: Path) -> None:
    assert json.loads(run("verify", "--home", str(home), "--json").output)["ok"] is True
    assert "ok: 11 entries" in run("verify", "--home", str(home)).output
    env = lmdb.open(str(home / CORTEX_DIR), max_dbs=64)
    db = env.open_db(ENTRIES_DB)
    with env.begin(write=True) as txn:
        slot = (6).to_bytes(8, "big")
        raw = bytearray(txn.get(slot, db=db))
        raw[-5] ^= 0x40
        txn.put(slot, bytes(raw), db=db)
    env.close()
    result = run("verify", "--home", str(home), code=1)
    assert "entry 6:" in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_inclusion_proof_round_trip_through_a_file_and_stdin(home: Path,
                                                             tmp_path: Path) -> None:
    doc = json.loads(run("proof", "5", "--home", str(home), "--json").output)
    assert doc["index"] == 5 and doc["size"] == SIZE and len(doc["path"]) <= 4
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(doc))
    assert "matches this ledger" in run("proof", "5", "--verify", str(path),
                                        "--home", str(home)).output
    ok = json.loads(run("proof", "5", "--verify", "-", "--home", str(home), "--json",
                        stdin=json.dumps(doc)).output)
    assert ok["proof_valid"] and ok["matches_local"]
    older = json.loads(run("proof", "2", "--size", "4", "--home", str(home), "--json").output)
    assert older["size"] == 4
    run("proof", "2", "--size", "4", "--verify", "-", "--home", str(home), stdin=json.dumps(older))


def test_bad_inclusion_proofs_fail_with_exit_1(home: Path) -> None:
    doc = json.loads(run("proof", "5", "--home", str(home), "--json").output)
    wrong_leaf = dict(doc, leaf_hash=sha256(b"x").hex())
    assert "does not verify" in run("proof", "5", "--verify", "-", "--home", str(home),
                                    code=1, stdin=json.dumps(wrong_leaf)).stderr
    assert "not 4" in run("proof", "4", "--verify", "-", "--home", str(home), code=1,
                          stdin=json.dumps(doc)).stderr
    wrong_size = dict(doc, size=SIZE - 1)
    run("proof", "5", "--verify", "-", "--home", str(home), code=1,
        stdin=json.dumps(wrong_size))
    run("proof", "5", "--verify", "-", "--home", str(home), code=1, stdin="not json")
    run("proof", "5", "--verify", "-", "--home", str(home), code=1,
        stdin=json.dumps(dict(doc, path=["zz"])))
    # A valid proof from a forked log: right maths, a root this ledger does not have.
    forked = {"index": 0, "size": 1, "leaf_hash": sha256(b"a").hex(),
              "root": sha256(b"a").hex(), "path": []}
    assert "forked" in run("proof", "0", "--verify", "-", "--home", str(home), code=1,
                           stdin=json.dumps(forked)).stderr


def test_consistency_proof_print_and_verify(home: Path) -> None:
    doc = json.loads(run("consistency", "4", str(SIZE), "--home", str(home),
                         "--json").output)
    assert (doc["old_size"], doc["new_size"]) == (4, SIZE)
    assert "matches" in run("consistency", "4", str(SIZE), "--verify", "-", "--home",
                            str(home), stdin=json.dumps(doc)).output
    bad = dict(doc, old_root=sha256(b"x").hex())
    assert "does not verify" in run("consistency", "4", str(SIZE), "--verify", "-", "--home",
                                    str(home), code=1, stdin=json.dumps(bad)).stderr
    assert "Check a consistency proof document" in run("consistency", "--help").output
    run("consistency", "5", str(SIZE), "--verify", "-", "--home", str(home), code=1,
        stdin=json.dumps(doc))
    assert "hashes" in run("consistency", "3", "8", "--home", str(home)).output
    run("consistency", "8", "3", "--home", str(home), code=1)


def test_show_and_export(home: Path, key: NodeKey) -> None:
    shown = json.loads(run("show", "3", "--home", str(home), "--json").output)
    assert shown["index"] == 3 and shown["author"] == key.peer_id
    assert shown["summary"] == {"verdict": "accept", "cp": 0.3}
    assert "payload_hash" in run("show", "3", "--home", str(home)).output
    exported = json.loads(run("export", "--format", "json", "--since", "7",
                              "--home", str(home)).output)
    assert [e["index"] for e in exported] == [7, 8, 9, 10]
    assert exported[0] == json.loads(run("show", "7", "--home", str(home), "--json").output)
    rows = list(csv.DictReader(io.StringIO(run("export", "--format", "csv",
                                               "--home", str(home)).output)))
    assert [int(r["index"]) for r in rows] == list(range(SIZE))
    assert json.loads(rows[2]["summary"])["cp"] == 0.2
    assert json.loads(run("export", "--since", "99", "--home", str(home)).output) == []
    assert json.loads(run("alarms", "--home", str(home), "--json").output) == []


def test_user_errors_exit_1_without_traceback(home: Path, tmp_path: Path) -> None:
    for args in (("show", "99"), ("proof", "99"), ("proof", "1", "--size", "99"),
                 ("consistency", "1", "99")):
        result = run(*args, "--home", str(home), code=1)
        assert "error" in result.stderr and "Traceback" not in result.stderr
    result = run("head", "--home", str(tmp_path / "empty"), code=1)
    assert "no Cortex" in result.stderr


def test_a_cortex_without_ledger_tables_says_so(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / CORTEX_DIR), max_dbs=64)
    env.close()
    result = run("head", "--home", str(tmp_path), code=1)
    assert "nothing has been recorded" in result.stderr


def test_verify_without_a_config_pins_nothing_and_says_so(home: Path, key: NodeKey) -> None:
    report = json.loads(run("verify", "--home", str(home), "--json").output)
    assert report["pinned_signers"] == [] and report["pinned_by"].startswith("nothing")
    assert "not checked against pinned voters" in " ".join(report["notes"])
    pinned = json.loads(run("verify", "--home", str(home), "--json",
                            "--voter", key.peer_id).output)
    assert pinned["ok"] and pinned["pinned_signers"] == [key.peer_id]
    other = NodeKey.from_seed(bytes(32))
    refused = run("verify", "--home", str(home), "--voter", other.peer_id, code=1)
    assert "not by a pinned voter" in refused.stderr
    bad = run("verify", "--home", str(home), "--voter", "not-a-peer", code=1)
    assert "is not an Ed25519 peer id" in bad.stderr
