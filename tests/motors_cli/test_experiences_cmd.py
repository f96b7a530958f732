"""`gd-node experiences add/list`: outcomes recorded against the gene's current version,
counters bumped, and M_P's evidence grows; bad states refused with nothing recorded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gd.motors.domains import get_domain
from tests.motors_cli.conftest import run, run_json

GENE = "inspect-hot-hpc"


def _text(seed: int, **override: float) -> str:
    values = dict(get_domain("turbofan").demo_states(1, seed)[0].values, **override)
    return ",".join(f"{k}={v!r}" for k, v in values.items())


def _gene(home: Path, gid: str) -> dict:
    return run_json("genes", "show", gid, "--home", home)


def test_add_from_text_records_and_bumps_counters(home: Path,
                                                  gene_id: Callable[[str], str]) -> None:
    gid = gene_id(GENE)
    (exp,) = run_json("experiences", "add", gid, "--state", _text(1, s11=48.0), "--success",
                      "--reward", "2.5", "--note", "caught it early", "--home", home)
    assert exp["gene_id"] == gid and exp["success"] is True and exp["reward"] == 2.5
    assert exp["gene_version"] == _gene(home, gid)["version_hash"]
    assert exp["state"]["values"]["s11"] == 48.0 and exp["note"] == "caught it early"
    out = run("experiences", "add", gid, "--state", _text(2), "--failure", "--home", home)
    assert "recorded 1 failure experience(s)" in out.output
    assert "now has 1 success(es) and 1 failure(s)" in out.output
    gene = _gene(home, gid)
    assert (gene["successes"], gene["failures"]) == (1, 1)
    listed = run_json("experiences", "list", gid, "--home", home)
    assert [e["success"] for e in listed] == [True, False]


def test_add_from_a_states_file_records_one_per_row(home: Path, gene_id: Callable[[str], str],
                                                    turbofan_csv: Path) -> None:
    gid = gene_id(GENE)
    recorded = run_json("experiences", "add", gid, "--state-file", turbofan_csv, "--failure",
                        "--home", home)
    assert len(recorded) == 12 and not any(e["success"] for e in recorded)
    assert _gene(home, gid)["failures"] == 12


def test_experiences_feed_the_next_evaluation(home: Path, gene_id: Callable[[str], str],
                                              turbofan_csv: Path) -> None:
    gid = gene_id("continue-healthy")
    before = run_json("evaluate", gid, "--states", turbofan_csv, "--aggregate", "--seed", "1",
                      "--home", home)[0]
    run("experiences", "add", gid, "--state-file", turbofan_csv, "--success", "--home", home)
    after = run_json("evaluate", gid, "--states", turbofan_csv, "--aggregate", "--seed", "1",
                     "--home", home)[0]
    shown = run_json("decisions", "show", after["id"], "--home", home)
    assert shown["request"]["evidence"]["experiences"] == 12
    assert after["motors"]["M_P"]["score"] > before["motors"]["M_P"]["score"]


def test_bad_states_and_options_record_nothing(home: Path, gene_id: Callable[[str], str],
                                               turbofan_csv: Path) -> None:
    gid = gene_id(GENE)
    cases = [
        (["--state", "s11=48.0", "--success"], 1, "lacks feature(s) unit, cycle"),
        (["--state", _text(1, s11=float("nan")), "--success"], 1, "not a finite number"),
        (["--state", _text(1) + ",colour=2", "--success"], 1, "not a feature of domain"),
        (["--state", _text(1), "--success", "--reward", "inf"], 1, "reward"),
        (["--state", _text(1)], 2, "--success or --failure"),
        (["--success"], 2, "exactly one of --state and --state-file"),
        (["--state", _text(1), "--state-file", str(turbofan_csv), "--success"], 2,
         "exactly one"),
    ]
    for args, code, message in cases:
        result = run("experiences", "add", gid, *args, "--home", home, ok=False)
        assert result.exit_code == code and message in result.output, (args, result.output)
    unknown = run("experiences", "add", "0" * 32, "--state", _text(1), "--success",
                  "--home", home, ok=False)
    assert unknown.exit_code == 1 and "no gene" in unknown.output
    loan_gene = gene_id("standard-good-score")
    wrong = run("experiences", "add", loan_gene, "--state-file", turbofan_csv, "--success",
                "--home", home, ok=False)
    assert wrong.exit_code == 1 and "not a feature of domain 'loan'" in wrong.output
    assert run_json("experiences", "list", gid, "--home", home) == []
    assert run_json("status", "--home", home)["cortex"]["experiences"] == 0
