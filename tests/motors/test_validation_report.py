"""The validation page shows M_P's history-strength choice (ADR 0035) next to the acting
rule's, marking the strength chosen on training engines."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench"
TESTS = ("FD001",)


def _cost(cost: float) -> dict:
    return {"cost": cost, "unplanned_failures": 1, "wasted_inspections": 2, "repairs": 3}


def _report() -> dict:
    cand = {"level": 0.5, "nested_train": _cost(100.0), "FD001": _cost(10.0)}
    return {
        "evidence_from": "train_FD001.txt", "lead_cycles": 30, "genes": {},
        "policy": {
            "cost_model": "inspect 5", "FD001": {
                n: _cost(10.0) for n in ("cp_verdicts", "tuned_threshold", "perfect_knowledge")},
            "tuned_rule": {"feature": "s11", "op": ">", "threshold": 47.98},
            "fitted_bands": {"bands": [[0.0, "v", "a"], [0.52, "ok", "a"]],
                             "acts_on": "CP", "how": "fitted"},
            "acting": {"chosen": "upper", "incumbent": "mean", "margin": 0.02,
                       "seeds": [1], "how": "nested", "candidates": {"upper": cand}}},
        "history_prior": {
            "chosen": 8.0, "incumbent": 0.0, "margin": 0.02, "how": "nested on train",
            "candidates": {"0.0": {"acting": "upper", "level": 0.57,
                                   "nested_train": _cost(11505.0)},
                           "8.0": {"acting": "upper", "level": 0.52,
                                   "nested_train": _cost(11185.0)}}},
        "adaptation": {"genes": {}, "rate": None, "improved": [], "vetoed": [], "how": "x"},
        "seconds": 1.0}


@pytest.fixture()
def vr(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module("validation_report")
    yield module
    sys.modules.pop("validation_report", None)


def test_the_page_marks_the_history_strength_chosen_on_train(vr) -> None:
    page = vr.render_html(_report(), TESTS)
    assert "<td>8.0 (chosen)</td>" in page and "<td>0.0</td>" in page
    assert "11185" in page and "11505" in page
    assert "M_P&#x27;s history fallback" in page or "M_P's history fallback" in page


def test_the_summary_prints_each_strengths_nested_cost(vr, capsys, tmp_path) -> None:
    vr.print_summary(_report(), TESTS, tmp_path)
    out = capsys.readouterr().out
    assert "0.0: upper 11505, 8.0: upper 11185; chosen 8" in out
