"""Issue 13, item 9: the decisions table fits 80 columns without cutting an id or a
score; wide terminals get every motor's score."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import gd.cli.output as output
from tests.motors_cli.conftest import run, run_json


@pytest.fixture
def width() -> Iterator:
    before = output.console.width
    yield lambda n: setattr(output.console, "width", n)
    output.console.width = before


def test_decisions_list_fits_80_columns_and_never_cuts_ids(home, gene_id, turbofan_csv,
                                                            width):
    run("evaluate", gene_id("inspect-hot-hpc"), "--states", turbofan_csv, "--home", home)
    decisions = run_json("decisions", "list", "--home", home)
    width(80)
    out = run("decisions", "list", "--home", home).output
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert "…" not in out, out  # nothing truncated
    for d in decisions:
        assert d["id"][:12] in out and f"{d['cp']:.3f}" in out
    width(140)
    wide = run("decisions", "list", "--home", home).output
    assert "M_P" in wide and "M_C" in wide and "band" in wide
