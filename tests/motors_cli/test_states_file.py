"""Reading states: feature CSV, the domains' raw formats, `--state` text, and the errors
(with file and line) for every kind of bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from gd.motors.domains import get_domain
from gd.motors.domains.loan import demo_events, write_csv
from gd.motors.domains.turbofan import FEATURES, demo_cmapss
from gd.node.app.states_file import (
    StatesFileError,
    parse_state_text,
    read_states,
    write_states_csv,
)


def test_feature_csv_round_trips_exactly(tmp_path: Path) -> None:
    states = get_domain("turbofan").demo_states(15, 4)
    back = read_states(write_states_csv(states, tmp_path / "s.csv"), "turbofan")
    assert back == states


def test_feature_csv_columns_in_any_order_without_meta(tmp_path: Path) -> None:
    pack = get_domain("loan")
    state = pack.demo_states(1, 2)[0]
    names = list(reversed(pack.features))
    path = tmp_path / "s.csv"
    path.write_text(",".join(names) + "\n" + ",".join(repr(state.values[n]) for n in names)
                    + "\n\n")
    (got,) = read_states(path, "loan")
    assert dict(got.values) == dict(state.values) and got.entity == "" and got.t == 0


def test_raw_cmapss_txt_goes_through_the_pack_loader(tmp_path: Path) -> None:
    rows, _ = demo_cmapss(units=2, seed=5)
    path = tmp_path / "train_FD001.txt"
    np.savetxt(path, rows, fmt="%.4f", delimiter=" ")
    states = read_states(path, "turbofan")
    assert len(states) == len(rows)
    assert states[0].entity == "1" and states[0].t == 1
    assert states[-1].values["s11"] == pytest.approx(rows[-1, FEATURES.index("s11")])


def test_bpi_event_log_csv_goes_through_the_loan_loader(tmp_path: Path) -> None:
    path = tmp_path / "bpi.csv"
    write_csv(demo_events(5, seed=1), path)
    states = read_states(path, "loan")
    assert len(states) == 5 and all(s.domain == "loan" for s in states)
    assert len({s.entity for s in states}) == 5 and all(s.entity for s in states)
    assert all(s.values["n_events"] >= 1 for s in states)


def _turbofan_csv(tmp_path: Path, rows: list[list[str]]) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(",".join(r) for r in [list(FEATURES), *rows]) + "\n")
    return path


def _good_row() -> list[str]:
    return [repr(v) for v in get_domain("turbofan").demo_states(1, 1)[0].vector(FEATURES)]


def test_not_a_number_names_file_line_and_column(tmp_path: Path) -> None:
    bad = _good_row()
    bad[FEATURES.index("s11")] = "hot"
    path = _turbofan_csv(tmp_path, [_good_row(), _good_row(), bad])
    with pytest.raises(StatesFileError, match=r"bad\.csv:4: column 's11': 'hot' is not a num"):
        read_states(path, "turbofan")


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity"])
def test_non_finite_values_are_rejected_with_line(tmp_path: Path, value: str) -> None:
    bad = _good_row()
    bad[3] = value
    path = _turbofan_csv(tmp_path, [bad])
    with pytest.raises(StatesFileError, match=r":2: column 'setting2'.*not a finite number"):
        read_states(path, "turbofan")


def test_missing_feature_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("unit,cycle,s11\n1,2,47.5\n")
    with pytest.raises(StatesFileError, match=r":1: missing feature column\(s\) setting1, "):
        read_states(path, "turbofan")


def test_unknown_and_duplicate_columns_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text(",".join([*FEATURES, "rul"]) + "\n")
    with pytest.raises(StatesFileError, match="column 'rul' is not a feature"):
        read_states(path, "turbofan")
    path.write_text(",".join([*FEATURES, "s11"]) + "\n")
    with pytest.raises(StatesFileError, match="column 's11' appears twice"):
        read_states(path, "turbofan")


def test_short_rows_header_only_and_empty_files(tmp_path: Path) -> None:
    path = _turbofan_csv(tmp_path, [_good_row(), _good_row()[:-2]])
    with pytest.raises(StatesFileError, match=r":3: 24 field\(s\), the header has 26"):
        read_states(path, "turbofan")
    header_only = _turbofan_csv(tmp_path, [])
    with pytest.raises(StatesFileError, match="a header but no rows"):
        read_states(header_only, "turbofan")
    empty = tmp_path / "empty.csv"
    empty.write_text("\n  \n")
    with pytest.raises(StatesFileError, match="the file is empty"):
        read_states(empty, "turbofan")


def test_bad_raw_cmapss_line_keeps_the_loaders_line_number(tmp_path: Path) -> None:
    rows, _ = demo_cmapss(units=1, seed=5)
    path = tmp_path / "train.txt"
    lines = [" ".join(f"{v:.4f}" for v in r) for r in rows[:3]]
    lines.append(" ".join(f"{v:.4f}" for v in rows[3][:20]))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(StatesFileError, match=r"train\.txt:4: 20 columns, C-MAPSS has 26"):
        read_states(path, "turbofan")


def test_unknown_domain_and_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(StatesFileError, match="unknown domain 'weather'"):
        read_states(tmp_path, "weather")
    with pytest.raises(StatesFileError, match="cannot read"):
        read_states(tmp_path / "absent.csv", "turbofan")


def test_state_text_needs_every_feature_and_finite_numbers() -> None:
    pack = get_domain("loan")
    values = pack.demo_states(1, 9)[0].values
    text = ",".join(f"{k}={v!r}" for k, v in values.items())
    state = parse_state_text(text, "loan")
    assert dict(state.values) == dict(values)
    with pytest.raises(StatesFileError, match="lacks feature"):
        parse_state_text("credit_score=700", "loan")
    with pytest.raises(StatesFileError, match="not a feature of domain 'loan'"):
        parse_state_text(text + ",colour=1", "loan")
    with pytest.raises(StatesFileError, match="not a finite number"):
        parse_state_text(text.replace(f"credit_score={values['credit_score']!r}",
                                      "credit_score=nan"), "loan")
    with pytest.raises(StatesFileError, match="expected feature=value"):
        parse_state_text("credit_score", "loan")
    assert math.isfinite(state.values["credit_score"])


def test_a_header_matching_neither_shape_says_both(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("temperature,pressure\n1,2\n")
    with pytest.raises(StatesFileError) as err:
        read_states(path, "turbofan")
    message = str(err.value)
    assert "other.csv:1: no column is a feature of domain 'turbofan'" in message
    assert "as the domain's raw format" in message and "C-MAPSS has 26" in message
