"""Reading the states a gene is evaluated on, from the files people actually have.

Three shapes are accepted, told apart by content, not by trusting the suffix alone:

* **feature CSV**: a header naming the domain's features (any order; optional `entity`
  and `t` columns locate each row), one state per row. This is the neutral format any
  domain can use, and what `write_states_csv` produces.
* **the domain's raw format**, handed to the domain pack's own loader so a user with the
  real data gets the same pipeline as the demo: C-MAPSS `train_FD00x.txt` (whitespace
  columns, no header) for turbofan, a BPI Challenge 2017 event log (CSV with the
  published column names, or XES) for loan.
* `--state 'f=v,f=v'` on the command line: one state (`parse_state_text`).

Every error names the file and the line (1-based, the header is line 1), so a user can
open the file at the right place. Nothing is evaluated until the whole file has parsed.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from gd.genome import StateVector
from gd.genome.errors import ValidationError
from gd.motors.domains import get_domain
from gd.motors.domains.pack import DomainPack
from gd.motors.errors import MotorInputError

# A Decision stores every input state, and the motors cap one decision at 100k states
# (`gd.motors.evaluate.MAX_STATES`); a file larger than that is a mistake or needs
# splitting, and reading it whole would only postpone the refusal.
MAX_STATE_ROWS: Final = 100_000
# Feature CSVs are small (26 numbers a row for C-MAPSS: ~200 bytes); 256 MiB is more than
# MAX_STATE_ROWS rows of the widest domain and bounds memory before parsing starts. The
# raw BPI log may be bigger: its loader applies its own limit.
MAX_FEATURE_CSV_BYTES: Final = 256 * 1024 * 1024
META_COLUMNS: Final = ("entity", "t")


class StatesFileError(ValueError):
    """A states file or `--state` text is unusable; the message says where and why."""


def read_states(path: str | Path, domain: str) -> list[StateVector]:
    """States of `domain` from `path` (feature CSV, or the domain's raw format)."""
    path = Path(path)
    pack = _pack(domain)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise StatesFileError(f"cannot read {path}: {exc.strerror}") from None
    if path.is_dir():
        raise StatesFileError(f"{path} is a directory, not a states file")
    if path.suffix.lower() == ".xes":
        return _raw(pack, path)
    first = _first_line(path)
    if first is None:
        raise StatesFileError(f"{path}: the file is empty")
    header = [h.strip() for h in next(csv.reader([first]))]
    if not _is_header(header):
        return _raw(pack, path)
    if any(h in pack.features or h in META_COLUMNS for h in header):
        if size > MAX_FEATURE_CSV_BYTES:
            raise StatesFileError(f"{path}: {size} bytes is more than the "
                                  f"{MAX_FEATURE_CSV_BYTES} a feature CSV may hold")
        return _feature_csv(pack, path)
    try:
        return _raw(pack, path)
    except StatesFileError as exc:
        # Neither shape fits: say both, the user may have meant either.
        raise StatesFileError(
            f"{path}:1: no column is a feature of domain {pack.name!r} (features: "
            f"{', '.join(pack.features)}), and as the domain's raw format: {exc}") from None


def _pack(domain: str) -> DomainPack:
    try:
        return get_domain(domain)
    except MotorInputError as exc:
        raise StatesFileError(str(exc)) from None


def _first_line(path: Path) -> str | None:
    with path.open(encoding="utf-8-sig", errors="replace") as fh:
        for line in fh:
            if line.strip():
                return line
    return None


def _is_header(fields: Sequence[str]) -> bool:
    """A first line is a header when some field is not a number (C-MAPSS has none)."""
    for f in fields:
        try:
            float(f)
        except ValueError:
            return True
    return False


def _raw(pack: DomainPack, path: Path) -> list[StateVector]:
    try:
        states = pack.load(path)
    except MotorInputError as exc:
        # The packs' loaders already say "path:line: why"; keep their words and add
        # which format we took the file for, since that was a guess.
        raise StatesFileError(f"{exc} (read as a raw {pack.name} file; a feature CSV needs "
                              f"a header naming the features)") from None
    if len(states) > MAX_STATE_ROWS:
        raise StatesFileError(f"{path}: {len(states)} states, at most {MAX_STATE_ROWS} "
                              "per file")
    if not states:
        raise StatesFileError(f"{path}: no states")
    return states


def _feature_csv(pack: DomainPack, path: Path) -> list[StateVector]:
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader)]
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise StatesFileError(f"{path}:1: column {name!r} appears twice")
        seen.add(name)
        if name not in pack.features and name not in META_COLUMNS:
            raise StatesFileError(
                f"{path}:1: column {name!r} is not a feature of domain {pack.name!r} "
                f"(features: {', '.join(pack.features)}; optional: {', '.join(META_COLUMNS)})")
    missing = [f for f in pack.features if f not in seen]
    if missing:
        raise StatesFileError(
            f"{path}:1: missing feature column(s) {', '.join(missing)} of domain "
            f"{pack.name!r}")
    states: list[StateVector] = []
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise StatesFileError(f"{path}:{line}: {len(row)} field(s), the header has "
                                  f"{len(header)}")
        if len(states) >= MAX_STATE_ROWS:
            raise StatesFileError(f"{path}:{line}: more than {MAX_STATE_ROWS} states")
        states.append(_row_state(pack, dict(zip(header, row, strict=True)), f"{path}:{line}"))
    if not states:
        raise StatesFileError(f"{path}: a header but no rows")
    return states


def _row_state(pack: DomainPack, cells: dict[str, str], where: str) -> StateVector:
    values: dict[str, float] = {}
    for name in pack.features:
        values[name] = _number(cells[name].strip(), f"{where}: column {name!r}")
    t_text = cells.get("t", "").strip()
    try:
        t = int(t_text) if t_text else 0
    except ValueError:
        raise StatesFileError(f"{where}: column 't': {t_text!r} is not an integer") from None
    try:
        return StateVector(domain=pack.name, values=values,
                           entity=cells.get("entity", "").strip(), t=t)
    except ValidationError as exc:
        raise StatesFileError(f"{where}: {exc}") from None


def _number(text: str, where: str) -> float:
    if not text:
        raise StatesFileError(f"{where}: empty")
    try:
        value = float(text)
    except ValueError:
        raise StatesFileError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise StatesFileError(f"{where}: {text!r} is not a finite number")
    return value


def parse_state_text(text: str, domain: str) -> StateVector:
    """`'s11=47.9,s12=521.3'` → a state of `domain` holding every one of its features.

    The state must name every feature of the domain: an experience with a partial state
    could not be placed in feature space, and M_P would fail on it at every later
    evaluation of the gene."""
    pack = _pack(domain)
    values: dict[str, float] = {}
    for i, part in enumerate(p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, raw = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise StatesFileError(f"--state item {i + 1} {part!r}: expected feature=value")
        if name not in pack.features:
            raise StatesFileError(f"--state: {name!r} is not a feature of domain "
                                  f"{pack.name!r} (features: {', '.join(pack.features)})")
        if name in values:
            raise StatesFileError(f"--state: {name!r} given twice")
        values[name] = _number(raw.strip(), f"--state: {name!r}")
    missing = [f for f in pack.features if f not in values]
    if missing:
        raise StatesFileError(f"--state lacks feature(s) {', '.join(missing)} of domain "
                              f"{pack.name!r}")
    return StateVector(domain=pack.name, values=values)


def write_states_csv(states: Sequence[StateVector], path: str | Path) -> Path:
    """Write `states` as a feature CSV (`entity`, `t`, then the domain's features), the
    format `read_states` reads back exactly (floats as `repr`, so no digit is lost)."""
    if not states:
        raise StatesFileError("no states to write")
    pack = _pack(states[0].domain)
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*META_COLUMNS, *pack.features])
        for i, s in enumerate(states):
            if s.domain != pack.name:
                raise StatesFileError(f"states[{i}] is in domain {s.domain!r}, not "
                                      f"{pack.name!r}")
            writer.writerow([s.entity, s.t, *(repr(v) for v in s.vector(pack.features))])
    return path
