"""`gd-node decisions list/show/replay/export`: replay reproduces exactly from the stored
gene version and the evidence as it was, and catches a decision altered in LMDB."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from gd.genome import Decision
from gd.motors.domains import get_domain
from gd.node.app.decisions import EVIDENCE_DB
from gd.node.app.states_file import write_states_csv
from gd.node.store.cortex import Cortex
from tests.motors_cli.conftest import run, run_json

GENE = "continue-healthy"


@pytest.fixture
def decided(home: Path, gene_id: Callable[[str], str], turbofan_csv: Path) -> list[dict]:
    return run_json("evaluate", gene_id(GENE), "--states", turbofan_csv, "--seed", "9",
                    "--home", home)


def _state_text(seed: int) -> str:
    values = get_domain("turbofan").demo_states(1, seed)[0].values
    return ",".join(f"{k}={v!r}" for k, v in values.items())


def test_replay_reproduces_exactly(home: Path, decided: list[dict]) -> None:
    for d in decided[:4]:
        out = run("decisions", "replay", d["id"], "--home", home)
        assert f"decision {d['id']} reproduces exactly" in out.output
    report = run_json("decisions", "replay", decided[-1]["id"], "--home", home)
    assert report == {"decision": decided[-1]["id"], "exact": True, "differences": [],
                      "notes": []}


def test_replay_uses_the_evidence_and_gene_version_as_they_were(
        home: Path, gene_id: Callable[[str], str], tmp_path: Path, decided: list[dict]) -> None:
    gid = gene_id(GENE)
    for seed in (1, 2, 3):
        run("experiences", "add", gid, "--state", _state_text(seed), "--success", "--home", home)
    spec = {"domain": "turbofan", "name": GENE, "action": "continue",
            "codons": [{"feature": "s11", "op": "<", "threshold": 47.7}], "params": {},
            "purpose": "edited"}
    edit = tmp_path / "edit.jsonl"
    edit.write_text(json.dumps(spec) + "\n")
    assert run_json("genes", "import", edit, "--home", home)["updated"] == 1
    report = run_json("decisions", "replay", decided[0]["id"], "--home", home)
    assert report["exact"] is True, report
    later = run_json("evaluate", gid, "--states", tmp_path / "tf.csv", "--aggregate", "--seed",
                     "9", "--home", home)[0]
    assert later["gene_version"] != decided[0]["gene_version"]
    shown = run_json("decisions", "show", later["id"], "--home", home)
    assert shown["request"]["evidence"]["experiences"] == 3


def test_replay_without_the_evidence_snapshot_says_so(
        home: Path, gene_id: Callable[[str], str], decided: list[dict]) -> None:
    run("experiences", "add", gene_id(GENE), "--state", _state_text(4), "--failure",
        "--home", home)
    with Cortex.open(home / "cortex") as cortex:
        db = cortex.open_db(EVIDENCE_DB)
        with cortex.env.begin(write=True) as txn:
            txn.drop(db, delete=False)
    result = run("decisions", "replay", decided[0]["id"], "--json", "--home", home, ok=False)
    report = json.loads(result.output)
    assert result.exit_code == 1 and report["exact"] is False
    assert "no evidence snapshot" in report["notes"][0]
    assert report["differences"][0].startswith("evidence: digest")


def test_replay_detects_a_decision_altered_in_lmdb(home: Path, decided: list[dict]) -> None:
    target = next(d for d in decided if "M_C" in d["motors"])
    with Cortex.open(home / "cortex") as cortex:
        stored = cortex.get_decision(target["id"])
        assert stored is not None
        plain = stored.to_plain()
        plain["cp"] = min(1.0, plain["cp"] + 0.05)
        plain["results"][0]["score"] = round(1.0 - plain["results"][0]["score"], 6) or 0.5
        forged = Decision.from_plain(plain)
        with cortex.env.begin(write=True) as txn:
            txn.put(target["id"].encode(), forged.encode(), db=cortex.open_db("decisions"))
    result = run("decisions", "replay", target["id"], "--home", home, ok=False)
    assert result.exit_code == 1 and "does not reproduce" in result.output
    assert "altered after it was written" in result.output
    report = json.loads(run("decisions", "replay", target["id"], "--json", "--home", home,
                            ok=False).output)
    assert "$.cp: stored" in " ".join(report["differences"])
    assert any(d.startswith("$.results[0].score") for d in report["differences"])


def test_replay_of_a_decision_whose_seed_was_altered(home: Path, decided: list[dict]) -> None:
    target = next(d for d in decided if "M_C" in d["motors"])
    with Cortex.open(home / "cortex") as cortex:
        plain = cortex.get_decision(target["id"]).to_plain()
        plain["seed"] = plain["seed"] + 1
        with cortex.env.begin(write=True) as txn:
            txn.put(target["id"].encode(), Decision.from_plain(plain).encode(),
                    db=cortex.open_db("decisions"))
    report = json.loads(run("decisions", "replay", target["id"], "--json", "--home", home,
                            ok=False).output)
    assert report["exact"] is False and report["differences"][0].startswith("$id:")


def test_list_show_and_id_prefixes(home: Path, gene_id: Callable[[str], str],
                                   decided: list[dict]) -> None:
    listed = run_json("decisions", "list", "--home", home)
    assert [d["id"] for d in listed] == [d["id"] for d in decided]  # oldest first
    assert run_json("decisions", "list", "--gene", gene_id("inspect-hot-hpc"),
                    "--home", home) == []
    full = run_json("decisions", "show", decided[0]["id"][:12], "--home", home)
    assert full["id"] == decided[0]["id"] and len(full["states"]) == 1
    assert full["request"]["motor_versions"].keys() == {"M_P", "M_N", "M_C", "M_M"}
    text = run("decisions", "show", decided[0]["id"], "--home", home).output
    assert "M_P" in text and "seed" in text and "gene version" in text
    assert run("decisions", "replay", decided[0]["id"][:12], "--home", home).exit_code == 0


def test_unknown_and_ambiguous_ids_are_exit_1(home: Path, decided: list[dict]) -> None:
    for args in (["show", "f" * 32], ["replay", "nothing"], ["show", "abc"]):
        result = run("decisions", *args, "--home", home, ok=False)
        assert result.exit_code == 1 and "no decision" in result.output
    unknown_gene = run("decisions", "list", "--gene", "0" * 32, "--home", home, ok=False)
    assert unknown_gene.exit_code == 1 and "no gene" in unknown_gene.output


def test_export_json_to_a_file_and_csv_to_stdout(home: Path, tmp_path: Path,
                                                 gene_id: Callable[[str], str],
                                                 decided: list[dict]) -> None:
    states = write_states_csv(get_domain("loan").demo_states(3, 1), tmp_path / "loan.csv")
    run("evaluate", gene_id("standard-good-score"), "--states", states, "--aggregate",
        "--seed", "1", "--home", home)
    out = tmp_path / "all.json"
    run("decisions", "export", "--format", "json", "--output", out, "--home", home)
    exported = json.loads(out.read_text())
    assert len(exported) == len(decided) + 1
    assert {d["id"] for d in exported} >= {d["id"] for d in decided}
    assert all(Decision.from_plain({k: v for k, v in d.items() if k != "id"}).id == d["id"]
               for d in exported)
    text = run("decisions", "export", "--format", "csv", "--gene", gene_id(GENE),
               "--home", home).output
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["id"] for r in rows] == [d["id"] for d in decided]
    for row, d in zip(rows, decided, strict=True):
        assert float(row["cp"]) == d["cp"] and row["verdict"] == d["verdict"]
        assert row["M_P_score"] != "" and (row["M_M_score"] == "") == ("M_M" not in d["motors"])
    bad = run("decisions", "export", "--format", "xml", "--home", home, ok=False)
    assert bad.exit_code == 2
