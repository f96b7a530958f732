"""The lines of a gene import file, parsed and checked: the part of `genes import` that
needs no key and no Cortex, shared by the importer (`importer.py`) and its signing
workers (`sign_pool.py`), so neither imports the other.

JSONL has one gene per line; CSV has the columns `domain,name,codons,action,params,purpose`
with codons written `feature op threshold; ...` and params as a JSON object (or empty).
Each line is checked on its own: the format (`gd.genome.checks`) and the values against
the domain pack (`gd.motors.domains.gene_check`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gd.genome import checks
from gd.genome.errors import ValidationError
from gd.genome.gene import Codon
from gd.motors.domains.gene_check import check_gene

# A line longer than this is refused before parsing: a gene is a few KiB at most.
MAX_LINE_BYTES = 256 * 1024
CSV_COLUMNS = ("domain", "name", "codons", "action", "params", "purpose")
_FIELDS = {"domain", "name", "codons", "action", "params", "purpose", "synapses", "id"}


@dataclass(frozen=True)
class GeneSpec:
    """A validated import line: everything needed to build and sign a gene."""

    line: int
    domain: str
    name: str
    codons: tuple[Codon, ...]
    action: str
    params: dict[str, Any]
    purpose: str
    synapses: tuple[Mapping[str, Any], ...] = ()
    gene_id: str | None = None


def spec_from_mapping(data: Any, line: int) -> GeneSpec:
    data = checks.require_map("line", data)
    checks.known_keys("line", data, _FIELDS)
    for required in ("domain", "name", "codons", "action"):
        if required not in data:
            raise ValidationError(required, "is required")
    codons = checks.nonempty_tuple("codons", data["codons"], checks.MAX_CODONS)
    synapses = data.get("synapses") or []
    if not isinstance(synapses, list):
        raise ValidationError("synapses", "expected a list")
    spec = GeneSpec(
        line=line,
        domain=checks.slug("domain", data["domain"]),
        name=checks.text("name", data["name"], checks.MAX_NAME_LEN, required=True),
        codons=tuple(Codon.from_plain(c, f"codons[{i}]") for i, c in enumerate(codons)),
        action=checks.slug("action", data["action"]),
        params=checks.params("params", data.get("params") or {}),
        purpose=checks.text("purpose", data.get("purpose", ""), checks.MAX_PURPOSE_LEN),
        synapses=tuple(checks.require_map(f"synapses[{i}]", s) for i, s in enumerate(synapses)),
        gene_id=checks.ident("id", data["id"]) if data.get("id") else None,
    )
    check_gene(spec)
    return spec


def parse_codon_text(text: str) -> list[dict[str, Any]]:
    """`s11 > 47.6; s12 <= 3` → codon mappings (CSV form)."""
    out = []
    for i, part in enumerate(p.strip() for p in text.split(";")):
        if not part:
            continue
        tokens = part.split()
        if len(tokens) != 3:
            raise ValidationError(f"codons[{i}]", f"{part!r} is not 'feature op threshold'")
        feature, op, threshold = tokens
        try:
            value = float(threshold)
        except ValueError:
            raise ValidationError(f"codons[{i}].threshold", f"{threshold!r} is not a number"
                                  ) from None
        out.append({"feature": feature, "op": op, "threshold": value})
    return out


def iter_raw(path: Path) -> Iterator[tuple[int, bytes | str]]:
    """The records of a JSONL or CSV file as (line number, JSON text of the record), or
    (line number, reason) for a line refused before parsing. A CSV row becomes the JSON
    text of its mapping, so both formats are parsed and checked by `parse_line` (in this
    process or in a `SignPool` worker)."""
    fmt = "csv" if path.suffix.lower() == ".csv" else "jsonl"
    with path.open("rb") as handle:
        if fmt == "jsonl":
            for number, raw in enumerate(handle, start=1):
                if len(raw) > MAX_LINE_BYTES:
                    yield number, f"line is longer than {MAX_LINE_BYTES} bytes"
                    continue
                text = raw.strip()
                if not text or text.startswith(b"#"):
                    continue
                yield number, text
            return
        text_handle = io.TextIOWrapper(handle, encoding="utf-8", newline="")
        reader = csv.DictReader(text_handle)
        header = reader.fieldnames or []
        missing = [c for c in ("domain", "name", "codons", "action") if c not in header]
        if missing:
            yield 1, f"CSV header lacks column(s) {', '.join(missing)}"
            return
        extra = [c for c in header if c not in CSV_COLUMNS]
        if extra:
            yield 1, f"CSV header has unknown column(s) {', '.join(extra)}"
            return
        try:
            for row in reader:
                number = reader.line_num
                try:
                    params = json.loads(row["params"]) if row.get("params") else {}
                    mapping = {
                        "domain": row["domain"], "name": row["name"],
                        "codons": parse_codon_text(row["codons"] or ""),
                        "action": row["action"], "params": params,
                        "purpose": row.get("purpose") or "",
                    }
                    yield number, line_text(mapping)
                except json.JSONDecodeError as exc:
                    yield number, f"params: not a JSON object: {exc.msg}"
                except ValidationError as exc:
                    yield number, str(exc)
        except (UnicodeDecodeError, csv.Error) as exc:
            yield reader.line_num, f"unreadable CSV: {exc}"


def parse_line(number: int, text: bytes) -> GeneSpec | tuple[int, str]:
    """One record's JSON text as a checked GeneSpec, or (line number, reason)."""
    try:
        return spec_from_mapping(json.loads(text), number)
    except json.JSONDecodeError as exc:
        return number, f"not valid JSON: {exc.msg} (column {exc.colno})"
    except UnicodeDecodeError:
        return number, "not valid UTF-8"
    except ValidationError as exc:
        return number, str(exc)


def iter_specs(path: Path) -> Iterator[GeneSpec | tuple[int, str]]:
    """Parsed lines of a JSONL or CSV file: a GeneSpec, or (line number, reason)."""
    for number, item in iter_raw(path):
        yield (number, item) if isinstance(item, str) else parse_line(number, item)


def line_text(mapping: dict[str, object]) -> bytes:
    """A CSV row's mapping as the JSON text a worker parses (floats round-trip exactly)."""
    return json.dumps(mapping).encode()
