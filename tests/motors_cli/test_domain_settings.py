"""`[domains.<name>]` in config.toml: one parser for sync's and the motors' keys; the
motors' bands and weights reach every evaluation; a typo is an error naming the key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gd.crdt.conflict import ConflictPolicy
from gd.node.config import ConfigError
from gd.node.domain_settings import parse_domain_settings
from gd.node.store.sync_store import domain_conflict_policies
from tests.motors_cli.conftest import run, run_json

BANDS = '[[0.0, "low", "adapt"], [0.2, "fine", "approve"], [0.9, "great", "approve"]]'


def _configure(home: Path, table: str) -> None:
    cfg = home / "config.toml"
    cfg.write_text(cfg.read_text() + f"\n[domains.turbofan]\n{table}\n")


def test_bands_and_weights_from_config_reach_evaluate(
        home: Path, gene_id: Callable[[str], str], turbofan_csv: Path) -> None:
    gid = gene_id("continue-healthy")
    before = run_json("evaluate", gid, "--states", turbofan_csv, "--seed", "4", "--home", home)
    _configure(home, f'conflict = "merge"\nbands = {BANDS}\nweights = {{ M_P = 0.0, M_N = 0.0 }}')
    after = run_json("evaluate", gid, "--states", turbofan_csv, "--seed", "4", "--home", home)
    assert not {d["band"] for d in before} & {"low", "fine", "great"}
    assert {d["band"] for d in after} <= {"low", "fine", "great", "vetoed", "needs-evidence"}
    assert {d["band"] for d in after} & {"low", "fine", "great"}
    # weight 0 on M_P and M_N: CP drops their factors (and M_P's doubt), so it rises.
    for b, a in zip(before, after, strict=True):
        if a["cp"] > 0 and b["cp"] > 0:
            assert a["cp"] >= b["cp"]
    shown = run_json("decisions", "show", after[0]["id"], "--home", home)
    assert shown["request"]["config"]["bands"][1] == [0.2, "fine", "approve"]
    assert shown["request"]["config"]["weights"]["M_N"] == 0.0


def test_unknown_or_bad_key_is_an_error_naming_it(
        home: Path, gene_id: Callable[[str], str], turbofan_csv: Path) -> None:
    _configure(home, "bandz = []")
    result = run("evaluate", gene_id("continue-healthy"), "--states", turbofan_csv,
                 "--home", home, ok=False)
    assert result.exit_code == 1 and "bandz" in result.output


@pytest.mark.parametrize(("table", "message"), [
    ({"turbofan": {"weights": {"M_X": 1.0}}}, "unknown motor"),
    ({"turbofan": {"bands": [[0.1, "a", "adapt"]]}}, "bands must start at 0"),
    ({"turbofan": {"bands": [[0.0, "a", "maybe"]]}}, "verdict in"),
    ({"turbofan": {"floor": "high"}}, "floor must be a number"),
    ({"turbofan": {"apply_min": 2.0}}, "apply_min must be in"),
    ({"nowhere": {"floor": 0.2}}, "unknown domain"),
])
def test_motor_settings_are_validated(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_domain_settings(table)


def test_sync_accepts_motor_keys_beside_conflict() -> None:
    policy = domain_conflict_policies({"turbofan": {"conflict": "lww", "floor": 0.2}})
    assert policy("turbofan") == ConflictPolicy(lww=True) and policy("loan") != policy("turbofan")
    settings = parse_domain_settings({"turbofan": {"floor": 0.2}})["turbofan"]
    assert settings.conflict == "queue" and settings.motor_config("turbofan").floor == 0.2
