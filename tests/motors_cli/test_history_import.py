"""`gd-node experiences import`: back-tests on a domain's historical record, labelled
experiences with provenance, one ledger entry per import; the domain's history then
informs genes that have none of their own."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gd.motors.domains import get_domain
from gd.motors.domains.loan import demo_events, load_cases, write_csv
from gd.motors.domains.turbofan import HORIZON, demo_cmapss, rul_for_train
from gd.node.app.states_file import write_states_csv
from tests.motors_cli.conftest import run, run_json


@pytest.fixture
def cmapss_train(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rows, _ = demo_cmapss(units=12, seed=21)
    path = tmp_path / "train_FD901.txt"
    path.write_text("\n".join(" ".join(f"{v:.4f}" for v in r) + " " for r in rows) + "\n")
    return path, rows


def _experience_entries(home: Path) -> list[dict]:
    entries = json.loads(run("ledger", "export", "--format", "json", "--home", home).output)
    return [e for e in entries if e["kind"] == "experience"]


def test_turbofan_import_labels_by_rul_with_provenance_and_one_ledger_entry(
        home: Path, gene_id: Callable[[str], str], cmapss_train) -> None:
    path, rows = cmapss_train
    gid = gene_id("inspect-hot-hpc")
    out = run_json("experiences", "import", path, "--gene", gid, "--home", home)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert out["sha256"] == sha and out["rows"] == len(rows) and out["domain"] == "turbofan"
    (g,) = out["genes"]
    assert g["gene_id"] == gid and 0 < g["recorded"] == g["fired"]
    rul = rul_for_train(rows)
    by_key = {(int(r[0]), int(r[1])): float(x) for r, x in zip(rows, rul, strict=True)}
    exps = run_json("experiences", "list", gid, "--home", home)
    assert len(exps) == g["recorded"]
    for e in exps:
        state = e["state"]
        assert e["note"].startswith(f"history {sha[:16]} row ")
        assert e["success"] == (by_key[(int(state["entity"]), state["t"])] <= HORIZON)
        assert state["values"]["s11"] > 47.8          # only where the gene fires
    assert 0 < sum(e["success"] for e in exps) < len(exps)
    (entry,) = _experience_entries(home)
    assert entry["summary"]["import"] == sha[:16] and entry["summary"]["rows"] == len(rows)
    assert entry["summary"]["experiences"] == g["recorded"]
    again = run_json("experiences", "import", path, "--gene", gid, "--home", home)
    assert again["recorded"] == 0 and again["genes"][0]["skipped"]
    assert len(_experience_entries(home)) == 1
    assert len(run_json("experiences", "list", gid, "--home", home)) == len(exps)


def test_domain_history_informs_a_gene_with_none_of_its_own(
        home: Path, gene_id: Callable[[str], str], cmapss_train, tmp_path: Path) -> None:
    path, rows = cmapss_train
    late = rows[rul_for_train(rows) <= 10]
    states = tmp_path / "late.csv"
    write_states_csv(get_domain("turbofan").states(late[:6]), states)
    newcomer = gene_id("inspect-low-s12")
    before = run_json("evaluate", newcomer, "--states", states, "--seed", "2", "--aggregate",
                      "--home", home)[0]
    run_json("experiences", "import", path, "--gene", gene_id("inspect-hot-hpc"),
             "--home", home)
    after = run_json("evaluate", newcomer, "--states", states, "--seed", "2", "--aggregate",
                     "--home", home)[0]
    assert run_json("experiences", "list", newcomer, "--home", home) == []
    assert "from 0.0 weighted experience(s)" in before["motors"]["M_P"]["explanation"]
    assert "from 0.0 weighted" not in after["motors"]["M_P"]["explanation"]
    # Late in life an inspection is what the record says works: M_P rises.
    assert after["motors"]["M_P"]["score"] > before["motors"]["M_P"]["score"] + 0.1
    shown = run_json("decisions", "show", after["id"], "--home", home)
    assert shown["request"]["evidence"]["experiences"] == 0
    replay = run_json("decisions", "replay", after["id"], "--home", home)
    assert replay["exact"] is True


def test_loan_import_of_a_bpi_2017_layout_log(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "bpi2017.csv"
    write_csv(demo_events(300, seed=5), path)
    out = run_json("experiences", "import", path, "--domain", "loan", "--home", home)
    closed = {c.case_id: c.outcome for c in load_cases(path) if c.outcome != "open"}
    assert out["rows"] == len(closed) and len(out["genes"]) == 4
    assert sum(g["recorded"] for g in out["genes"]) > 0
    for g in out["genes"]:
        for e in run_json("experiences", "list", g["gene_id"], "--home", home):
            outcome = closed[e["state"]["entity"]]
            expected = {"standard_offer": outcome == "pending",
                        "improved_offer": outcome == "pending",
                        "follow_up_call": outcome != "cancelled",
                        "decline": outcome == "denied"}[g["action"]]
            assert e["success"] == expected
    assert len(_experience_entries(home)) == 1


def test_bad_invocations_are_clear_errors(home: Path, gene_id: Callable[[str], str],
                                          tmp_path: Path, cmapss_train) -> None:
    path, _ = cmapss_train
    both = run("experiences", "import", path, "--gene", gene_id("inspect-hot-hpc"),
               "--domain", "turbofan", "--home", home, ok=False)
    assert both.exit_code == 2 and "exactly one" in both.output
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n")
    result = run("experiences", "import", bad, "--domain", "turbofan", "--home", home, ok=False)
    assert result.exit_code == 1 and "bad.txt:1: 3 columns" in result.output
    unknown = run("experiences", "import", path, "--domain", "weather", "--home", home,
                  ok=False)
    assert unknown.exit_code == 1 and "unknown domain" in unknown.output
