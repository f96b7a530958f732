"""`gd-node evaluate`: one decision per row or one over the batch, stored; bad inputs and
pending genes refused with nothing stored."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from gd.cli import evaluate_cmds, motors_common
from gd.motors.domains.loan import demo_events, write_csv
from gd.motors.domains.turbofan import FEATURES, demo_cmapss
from gd.node.store.cortex import Cortex
from tests.motors_cli.conftest import run, run_json

TURBOFAN_GENE = "inspect-hot-hpc"


def _decision_count(home: Path) -> int:
    return run_json("status", "--home", home)["cortex"]["decisions"]


def test_one_decision_per_row_with_every_motor_reported(
        home: Path, gene_id: Callable[[str], str], turbofan_csv: Path) -> None:
    gid = gene_id("continue-healthy")
    out = run_json("evaluate", gid, "--states", turbofan_csv, "--seed", "11", "--home", home)
    assert len(out) == 12 and {d["gene_id"] for d in out} == {gid}
    assert all(d["seed"] == 11 and d["states"] == 1 for d in out)
    for d in out:
        assert set(d["motors"]) <= {"M_P", "M_N", "M_C", "M_M"} and "M_P" in d["motors"]
        vetoed = [m for m, r in d["motors"].items() if r["veto"]]
        assert (d["verdict"] == "veto") == bool(vetoed)
        assert (d["cp"] == 0.0) if vetoed else 0.0 < d["cp"] <= 1.0
        if vetoed:
            assert d["first_veto"].startswith(f"{vetoed[0]}: vetoed")
    assert _decision_count(home) == 12
    listed = run_json("decisions", "list", "--gene", gid, "--home", home)
    assert sorted(d["id"] for d in listed) == sorted(d["id"] for d in out)


def test_aggregate_gives_one_decision_over_the_batch(
        home: Path, gene_id: Callable[[str], str], turbofan_csv: Path) -> None:
    (d,) = run_json("evaluate", gene_id(TURBOFAN_GENE), "--states", turbofan_csv,
                    "--aggregate", "--seed", "3", "--home", home)
    assert d["states"] == 12 and d["seed"] == 3


def test_same_seed_same_scores_and_the_table_output(
        home: Path, gene_id: Callable[[str], str], turbofan_csv: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    wide = Console(width=160)
    monkeypatch.setattr(motors_common, "console", wide)
    monkeypatch.setattr(evaluate_cmds, "console", wide)
    gid = gene_id("continue-healthy")
    a = run_json("evaluate", gid, "--states", turbofan_csv, "--seed", "5", "--home", home)
    b = run_json("evaluate", gid, "--states", turbofan_csv, "--seed", "5", "--home", home)
    assert [(x["cp"], x["motors"]) for x in a] == [(x["cp"], x["motors"]) for x in b]
    table = run("evaluate", gid, "--states", turbofan_csv, "--seed", "5", "--home", home)
    for word in ("M_P", "M_N", "M_C", "M_M", "CP", "band", "verdict", "seed 5",
                 "12 decision(s) stored"):
        assert word in table.output
    vetoed = [x for x in a if x["first_veto"]]
    assert vetoed, "the demo states should include a vetoed one"
    assert "first veto" in table.output and vetoed[0]["first_veto"][:40] in table.output


def test_monte_carlo_options_are_stored_in_the_request(
        home: Path, gene_id: Callable[[str], str], turbofan_csv: Path) -> None:
    gid = gene_id("continue-healthy")
    (d,) = run_json("evaluate", gid, "--states", turbofan_csv, "--aggregate", "--seed", "1",
                    "--monte-carlo-n", "64", "--epsilon", "0.1", "--cap", "128", "--home", home)
    full = run_json("decisions", "show", d["id"], "--home", home)
    assert (full["request"]["monte_carlo_n"], full["request"]["epsilon"],
            full["request"]["cap"], full["request"]["backend"]) == (64, 0.1, 128, "numpy")


def test_raw_cmapss_and_bpi_files_evaluate_end_to_end(
        home: Path, gene_id: Callable[[str], str], tmp_path: Path) -> None:
    rows, _ = demo_cmapss(units=1, seed=2)
    txt = tmp_path / "train_FD001.txt"
    np.savetxt(txt, rows[-5:], fmt="%.4f")
    out = run_json("evaluate", gene_id(TURBOFAN_GENE), "--states", txt, "--seed", "1",
                   "--home", home)
    assert len(out) == 5
    bpi = tmp_path / "bpi.csv"
    write_csv(demo_events(4, seed=2), bpi)
    loan = run_json("evaluate", gene_id("standard-good-score"), "--states", bpi, "--seed", "1",
                    "--home", home)
    assert len(loan) == 4 and {d["domain"] for d in loan} == {"loan"}


def test_unknown_gene_is_exit_1(home: Path, turbofan_csv: Path) -> None:
    result = run("evaluate", "0" * 32, "--states", turbofan_csv, "--home", home, ok=False)
    assert result.exit_code == 1 and "no gene" in result.output


def test_bad_rows_fail_with_line_number_and_store_nothing(
        home: Path, gene_id: Callable[[str], str], turbofan_csv: Path) -> None:
    lines = turbofan_csv.read_text().splitlines()
    cells = lines[3].split(",")
    cells[2 + FEATURES.index("s4")] = "NaN"
    lines[3] = ",".join(cells)
    bad = turbofan_csv.with_name("nan.csv")
    bad.write_text("\n".join(lines) + "\n")
    result = run("evaluate", gene_id(TURBOFAN_GENE), "--states", bad, "--home", home, ok=False)
    assert result.exit_code == 1
    assert "nan.csv:4: column 's4'" in result.output and "finite" in result.output
    assert "Traceback" not in result.output
    assert _decision_count(home) == 0


def test_missing_features_and_wrong_domain_file(
        home: Path, gene_id: Callable[[str], str], tmp_path: Path, loan_csv: Path) -> None:
    partial = tmp_path / "p.csv"
    partial.write_text("s11,s4\n47.9,1420\n")
    result = run("evaluate", gene_id(TURBOFAN_GENE), "--states", partial, "--home", home,
                 ok=False)
    assert result.exit_code == 1 and "missing feature column(s) unit, cycle" in result.output
    wrong = run("evaluate", gene_id(TURBOFAN_GENE), "--states", loan_csv, "--home", home,
                ok=False)
    assert wrong.exit_code == 1 and "is not a feature of domain 'turbofan'" in wrong.output
    assert _decision_count(home) == 0


def test_bad_options_are_usage_errors(home: Path, gene_id: Callable[[str], str],
                                      turbofan_csv: Path) -> None:
    gid = gene_id(TURBOFAN_GENE)
    for args in (["--epsilon", "0"], ["--cap", "0"], ["--seed", "-1"],
                 ["--monte-carlo-n", "100", "--cap", "10"]):
        result = run("evaluate", gid, "--states", turbofan_csv, *args, "--home", home, ok=False)
        assert result.exit_code == 2, (args, result.output)
    missing = run("evaluate", gid, "--states", turbofan_csv.with_name("none.csv"), "--home",
                  home, ok=False)
    assert missing.exit_code == 2
    assert _decision_count(home) == 0


def _import_pending(home: Path, tmp_path: Path) -> str:
    spec = {"domain": "turbofan", "name": "received-rule", "action": "inspect",
            "codons": [{"feature": "s11", "op": ">", "threshold": 47.5}], "params": {},
            "purpose": "from a peer"}
    path = tmp_path / "pending.jsonl"
    path.write_text(json.dumps(spec) + "\n")
    run("genes", "import", path, "--pending", "--home", home)
    genes = run_json("genes", "list", "--status", "adaptation_pending", "--home", home)
    return next(g["id"] for g in genes if g["name"] == "received-rule")


def test_pending_gene_needs_allow_pending(home: Path, tmp_path: Path,
                                          turbofan_csv: Path) -> None:
    gid = _import_pending(home, tmp_path)
    refused = run("evaluate", gid, "--states", turbofan_csv, "--home", home, ok=False)
    assert refused.exit_code == 1
    assert "adaptation_pending" in refused.output and "--allow-pending" in refused.output
    assert _decision_count(home) == 0
    out = run_json("evaluate", gid, "--states", turbofan_csv, "--allow-pending", "--aggregate",
                   "--seed", "2", "--home", home)
    assert len(out) == 1 and _decision_count(home) == 1


def test_rejected_gene_is_refused_even_with_allow_pending(
        home: Path, gene_id: Callable[[str], str], turbofan_csv: Path) -> None:
    gid = gene_id(TURBOFAN_GENE)
    with Cortex.open(home / "cortex") as cortex:
        cortex.set_status(gid, "rejected")
    result = run("evaluate", gid, "--states", turbofan_csv, "--allow-pending", "--home", home,
                 ok=False)
    assert result.exit_code == 1 and "is rejected" in result.output
