"""Listing and exporting stored decisions: what `decisions list|show|export`, the API
and the GraphQL schema print (moved out of gd.node.app.decisions, which re-exports these
names, so that module stays about computing and storing decisions)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any, Final

from gd.genome import Decision
from gd.motors.evaluate import MOTOR_VERSIONS
from gd.node.store.cortex import Cortex

MOTORS: Final = tuple(MOTOR_VERSIONS)


def list_decisions(cortex: Cortex, gene_id: str | None = None) -> list[Decision]:
    """Stored decisions, oldest first (by decision time, then id)."""
    return sorted(cortex.decisions(gene_id), key=lambda d: (d.decided_at, d.id))


def first_veto(decision: Decision) -> str:
    """The explanation of the motor that stopped the evaluation ('' when none did)."""
    hit = next((r for r in decision.results if r.veto), None)
    return f"{hit.motor}: {hit.explanation}" if hit is not None else ""


def decision_summary(decision: Decision) -> dict[str, Any]:
    """A decision without its input states: what a list or an evaluate run prints."""
    return {
        "id": decision.id, "gene_id": decision.gene_id, "gene_version": decision.gene_version,
        "domain": decision.domain, "decided_at": decision.decided_at, "node": decision.node,
        "seed": decision.seed, "states": len(decision.states), "cp": decision.cp,
        "band": decision.band, "verdict": decision.verdict,
        "motors": {r.motor: {"score": r.score, "veto": r.veto, "explanation": r.explanation}
                   for r in decision.results},
        "first_veto": first_veto(decision),
    }


def decision_full(decision: Decision) -> dict[str, Any]:
    """Everything stored, plus the id: what `decisions show` and the JSON export print."""
    return {"id": decision.id, **decision.to_plain()}


CSV_COLUMNS: Final = (
    "id", "gene_id", "gene_version", "domain", "decided_at", "node", "seed", "states",
    "entity", "t", *(f"{m}_{part}" for m in MOTORS for part in ("score", "veto")),
    "cp", "band", "verdict", "first_veto",
)


def decisions_csv(decisions: Iterable[Decision]) -> str:
    """One row per decision: its scores and verdict (states are summarised: their count,
    and the entity and time of a single-state decision). Motors that did not run (the
    evaluation stopped earlier) are empty cells."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for d in decisions:
        single = d.states[0] if len(d.states) == 1 else None
        cells: list[Any] = [d.id, d.gene_id, d.gene_version, d.domain, d.decided_at, d.node,
                            d.seed, len(d.states), single.entity if single else "",
                            single.t if single else ""]
        for motor in MOTORS:
            r = d.result(motor)
            cells += [repr(r.score), int(r.veto)] if r is not None else ["", ""]
        cells += [repr(d.cp), d.band, d.verdict, first_veto(d)]
        writer.writerow(cells)
    return out.getvalue()
