"""A decision as a PDF: what an auditor or a maintenance planner files.

One page (more when the inputs are long): the decision's identity (id, gene and version,
node, time, seed), the verdict, band and CP, each motor's score, veto and explanation,
and the input states. Built with fpdf2's core fonts (no font files to ship); text those
fonts cannot show (outside Latin-1) is replaced, never dropped silently: a `?` marks it.
Deterministic for one decision: no creation date, so the same decision yields the same
bytes (replayable and diffable like the rest of the decision trail).
"""

from __future__ import annotations

import datetime
from typing import Any, Final

from fpdf import FPDF

from gd.genome import Decision
from gd.node.app.decisions import MOTORS

MAX_STATES_SHOWN: Final = 200
_W: Final = 180  # usable width in mm (A4, 15 mm margins)


def _latin1(text: Any) -> str:
    return str(text).encode("latin-1", "replace").decode("latin-1")


def _when(stamp: int) -> str:
    """An HLC stamp (milliseconds in the top 48 bits) as UTC time; else the number."""
    ms = stamp >> 16
    if 10**12 <= ms < 10**14:
        return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
    return str(stamp)


def decision_pdf(decision: Decision) -> bytes:
    """The PDF document of one decision."""
    pdf = FPDF(format="A4")
    pdf.set_margins(15, 15, 15)
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.set_creation_date(datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC))
    pdf.set_title(_latin1(f"Decision {decision.id}"))
    pdf.set_creator("gd-node")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 15)
    pdf.cell(_W, 9, _latin1(f"Decision {decision.id}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    rows = [("gene", decision.gene_id), ("gene version", decision.gene_version),
            ("domain", decision.domain), ("decided at", _when(decision.decided_at)),
            ("node", decision.node), ("seed", decision.seed),
            ("verdict", decision.verdict), ("band", decision.band),
            ("CP", f"{decision.cp:.6f}")]
    for label, value in rows:
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(35, 6, _latin1(label))
        pdf.set_font("Helvetica", "", 10)
        pdf.multi_cell(_W - 35, 6, _latin1(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(_W, 8, "Motors", new_x="LMARGIN", new_y="NEXT")
    for motor in MOTORS:
        result = decision.result(motor)
        pdf.set_font("Helvetica", "B", 10)
        if result is None:
            pdf.cell(_W, 6, _latin1(f"{motor}: did not run (the evaluation stopped earlier)"),
                     new_x="LMARGIN", new_y="NEXT")
            continue
        veto = "  VETO" if result.veto else ""
        pdf.cell(_W, 6, _latin1(f"{motor}: score {result.score:.6f}{veto}"),
                 new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 9)
        pdf.multi_cell(_W, 5, _latin1(result.explanation or "-"), new_x="LMARGIN",
                       new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(_W, 8, _latin1(f"Inputs ({len(decision.states)} state(s))"), new_x="LMARGIN",
             new_y="NEXT")
    pdf.set_font("Courier", "", 8)
    for i, state in enumerate(decision.states[:MAX_STATES_SHOWN]):
        values = ", ".join(f"{k}={v:g}" for k, v in sorted(state.values.items()))
        pdf.multi_cell(_W, 4, _latin1(f"[{i}] entity={state.entity or '-'} t={state.t}: "
                                      f"{values}"), new_x="LMARGIN", new_y="NEXT")
    if len(decision.states) > MAX_STATES_SHOWN:
        pdf.multi_cell(_W, 4, f"... {len(decision.states) - MAX_STATES_SHOWN} more (the JSON "
                              "export has every state)", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
