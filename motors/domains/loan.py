"""Loan applications in the BPI Challenge 2017 layout (a Dutch bank's event log).

The log has one trace per application (`case:concept:name` = `Application_…`, with
`case:RequestedAmount`, `case:LoanGoal`, `case:ApplicationType`) and events named
`A_*` (application states), `O_*` (offers, carrying `OfferID`, `OfferedAmount`,
`MonthlyCost`, `NumberOfTerms`, `FirstWithdrawalAmount`, `CreditScore`, `Accepted`,
`Selected`) and `W_*` (workflow items such as `W_Call after offers`). An application ends
`A_Pending` (the loan is paid out), `A_Denied` or `A_Cancelled`.

A state is one application as seen at its last event: amounts, the offer on the table,
how many offers, calls and incomplete-file rounds it went through, and elapsed hours.

The game: the bank (standard offer, improved offer, follow-up call, decline) against
the applicant (accept, negotiate, walk away). Amounts are in k€; losses in M_C are per
unit of the amount offered, so tail risk compares across loan sizes.
"""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from gd.genome import StateVector
from gd.motors.backend import Array, Backend
from gd.motors.domains.pack import DomainConfig, DomainPack, HistoricalRecord, demo_gene
from gd.motors.errors import MotorInputError

FEATURES = (
    "requested_amount", "credit_score", "offered_amount", "monthly_cost", "number_of_terms",
    "first_withdrawal", "n_offers", "n_events", "n_incomplete", "n_calls", "elapsed_hours",
    "application_new",
)
OUTCOMES = ("pending", "denied", "cancelled", "open")

# Published column names (XES attribute keys as flattened to CSV), and common aliases.
COL_CASE = "case:concept:name"
COL_ACTIVITY = "concept:name"
COL_TIME = "time:timestamp"
ALIASES = {
    COL_CASE: ("case:concept:name", "Case ID", "case_id", "case"),
    COL_ACTIVITY: ("concept:name", "Activity", "activity"),
    COL_TIME: ("time:timestamp", "Complete Timestamp", "timestamp", "Timestamp"),
}
CSV_COLUMNS = (
    "case:concept:name", "case:ApplicationType", "case:LoanGoal", "case:RequestedAmount",
    "concept:name", "lifecycle:transition", "time:timestamp", "org:resource", "EventOrigin",
    "OfferID", "OfferedAmount", "MonthlyCost", "NumberOfTerms", "FirstWithdrawalAmount",
    "CreditScore", "Accepted", "Selected",
)
MAX_LOG_BYTES = 2 * 1024**3   # the real BPI 2017 XES is ~0.5 GB; refuse anything absurd

# Model constants (k€ and fractions of the loan).
MARGIN = (0.10, 0.06, 0.10, 0.0)    # standard, improved, call (standard terms), decline
CALL_COST = 0.05                    # k€ for a follow-up call
ROUND_COST = 0.05                   # k€ for another negotiation round
HANDLING_COST = 0.02                # k€ spent on an application that walks away
LGD = 0.5                           # loss given default, fraction of the amount
PD_NO_SCORE = 0.1                   # default probability when no credit score is known
OUTSIDE_OPTION = 0.3                # applicant's utility of walking away
UTILITY_NOISE = 0.5
PD_SPREAD = 0.3
HORIZON = 10                        # weeks of engagement looked ahead
ACCEPT_BONUS = (0.0, 0.5, 0.3, -1.0)


class LoanPack(DomainPack):
    name = "loan"
    features = FEATURES
    actions = ("standard_offer", "improved_offer", "follow_up_call", "decline")
    counter_actions = ("accept", "negotiate", "walk_away")
    default_action = "standard_offer"
    noise_dims = 3   # applicant utility shock, default draw, default-rate uncertainty
    center = np.array([15000.0, 800.0, 15000.0, 300.0, 72.0, 8000.0, 1.5, 30.0, 0.5, 2.0,
                       400.0, 1.0])
    scale = np.array([10000.0, 200.0, 10000.0, 200.0, 36.0, 8000.0, 1.0, 15.0, 1.0, 2.0,
                      400.0, 0.5])
    config = DomainConfig(floor=0.3, min_evidence=8.0, cvar_alpha=0.95, cvar_limit=0.45,
                          loss_scale=1.0, tolerance=0.01, horizon=HORIZON)

    def _terms(self, bk: Backend, X: Array) -> dict[str, Array]:
        f = {name: X[..., i] for i, name in enumerate(FEATURES)}
        offered = bk.where(f["offered_amount"] > 0, f["offered_amount"], f["requested_amount"])
        amount = bk.maximum(offered, 1.0) / 1000.0
        score = f["credit_score"]
        pd = bk.where(score > 0, bk.sigmoid(-(score - 550.0) / 60.0), PD_NO_SCORE)
        burden = bk.clip(f["monthly_cost"] * f["number_of_terms"] / (amount * 1000.0) - 1.0,
                         0.0, 2.0)
        fatigue = f["elapsed_hours"] / 720.0 + 0.3 * f["n_incomplete"]
        return {"amount": amount, "pd": pd, "burden": burden, "fatigue": fatigue}

    def game(self, bk: Backend, X: Array) -> tuple[Array, Array]:
        t = self._terms(bk, X)
        amount, pd = t["amount"], t["pd"]
        rows_a, rows_b = [], []
        for i in range(4):
            profit = amount * (MARGIN[i] * (1.0 - pd) - LGD * pd) - (CALL_COST if i == 2 else 0)
            if i == 3:
                rows_a.append(bk.stack([profit * 0.0] * 3, axis=-1))
            else:
                cost = CALL_COST if i == 2 else 0.0
                rows_a.append(bk.stack([profit, profit * 0.0 - ROUND_COST - cost,
                                        profit * 0.0 - HANDLING_COST - cost], axis=-1))
            u_acc = 1.0 - 1.5 * t["burden"] + ACCEPT_BONUS[i]
            rows_b.append(bk.stack([u_acc, 0.4 - 0.5 * t["fatigue"],
                                    t["fatigue"] * 0.0 + OUTSIDE_OPTION], axis=-1))
        return bk.stack(rows_a, axis=1), bk.stack(rows_b, axis=1)

    def _accept(self, bk: Backend, t: dict[str, Array], z: Array, i: int) -> Array:
        return bk.tofloat(1.0 - 1.5 * t["burden"] + ACCEPT_BONUS[i]
                          + UTILITY_NOISE * z[..., 0] > OUTSIDE_OPTION)

    def losses(self, bk: Backend, X: Array, z: Array) -> Array:
        t = self._terms(bk, X)
        pd = bk.clip(t["pd"] * bk.exp(PD_SPREAD * z[..., 2]), 0.0, 1.0)
        default = bk.tofloat(bk.sigmoid(1.702 * z[..., 1]) < pd)
        out = []
        for i in range(4):
            if i == 3:
                out.append(z[..., 0] * 0.0)
                continue
            acc = self._accept(bk, t, z, i)
            cost = (CALL_COST if i == 2 else 0.0) / t["amount"]
            profit = acc * (MARGIN[i] - default * (MARGIN[i] + LGD)) \
                - (1.0 - acc) * HANDLING_COST / t["amount"] - cost
            out.append(-profit)
        return bk.stack(out, axis=-1)

    def trajectory(self, bk: Backend, X: Array, z: Array) -> Array:
        """Applicant engagement over the coming weeks: utility of the standard offer
        minus fatigue that compounds while the application stays open."""
        t = self._terms(bk, X)
        steps = bk.asarray(np.arange(1, HORIZON + 1, dtype=np.float64))
        base = 1.0 - 1.5 * t["burden"] + UTILITY_NOISE * z[..., 0]
        tired = bk.expand(t["fatigue"] * (1.0 + 0.2 * z[..., 2]), -1) * bk.exp(0.1 * steps)
        return bk.expand(base, -1) - tired

    # -- data ----------------------------------------------------------------------
    def demo_states(self, n: int, seed: int) -> list[StateVector]:
        cases = cases_from_events(demo_events(n, seed))
        return [c.state() for c in cases]

    def load(self, path: str | Path) -> list[StateVector]:
        return [c.state() for c in load_cases(path)]

    def history(self, path: str | Path) -> HistoricalRecord:
        """A BPI 2017 log: each closed application's outcome labels every action by its
        purpose. An offer (standard or improved) succeeds when the loan was paid out
        (`A_Pending`); a follow-up call when the applicant did not walk away
        (`A_Cancelled`); a decline when the bank's own assessment denied it
        (`A_Denied`). Applications still open have no outcome and are left out."""
        cases = [c for c in load_cases(path) if c.outcome != "open"]
        if not cases:
            raise MotorInputError(f"{path}: no closed applications to learn from")
        outcome = np.array([c.outcome for c in cases])
        paid = outcome == "pending"
        return HistoricalRecord(
            X=self.matrix([c.state() for c in cases]),
            entities=tuple(c.case_id for c in cases),
            times=tuple(c.elapsed_hours for c in cases),
            labels={"standard_offer": paid, "improved_offer": paid,
                    "follow_up_call": outcome != "cancelled",
                    "decline": outcome == "denied"},
            rule="offers succeed when paid out (A_Pending), a call when not cancelled, a "
                 "decline when denied; open applications left out")

    def demo_genes(self) -> list[dict[str, Any]]:
        d = self.name
        return [
            demo_gene(d, "improve-offer-heavy-burden", [("monthly_cost", ">", 450.0)],
                      "improved_offer", "keep applicants whose repayments are heavy"),
            demo_gene(d, "call-after-silence", [("elapsed_hours", ">", 240.0),
                                                ("n_calls", "<", 2.0)],
                      "follow_up_call", "re-engage applicants who went quiet"),
            demo_gene(d, "decline-low-score", [("credit_score", "<", 520.0),
                                               ("credit_score", ">", 0.0)],
                      "decline", "do not lend where default is likely"),
            demo_gene(d, "standard-good-score", [("credit_score", ">", 750.0)],
                      "standard_offer", "lend on standard terms to sound applicants"),
        ]


@dataclass(frozen=True)
class LoanCase:
    """One application folded from its events; `outcome` in OUTCOMES."""

    case_id: str
    values: Mapping[str, float]
    outcome: str
    elapsed_hours: int

    def state(self) -> StateVector:
        return StateVector(domain="loan", values=dict(self.values), entity=self.case_id,
                           t=self.elapsed_hours)


def _num(value: Any, default: float = 0.0) -> float:
    if value in (None, ""):
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if np.isfinite(out) else default


def _parse_time(value: str, where: str) -> datetime:
    text = value.strip().replace("/", "-").replace("Z", "+00:00")
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise MotorInputError(f"{where}: {value!r} is not an ISO-8601 timestamp") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def cases_from_events(events: Iterable[Mapping[str, Any]]) -> list[LoanCase]:
    """Fold an event stream (dicts with the published column names) into cases."""
    by_case: dict[str, list[tuple[datetime, int, Mapping[str, Any]]]] = {}
    for i, ev in enumerate(events):
        case = str(ev.get(COL_CASE) or "")
        if not case:
            raise MotorInputError(f"event {i}: no {COL_CASE}")
        if not ev.get(COL_ACTIVITY):
            raise MotorInputError(f"event {i}: no {COL_ACTIVITY}")
        stamp = ev.get(COL_TIME)
        when = stamp if isinstance(stamp, datetime) else _parse_time(str(stamp or ""),
                                                                       f"event {i}")
        by_case.setdefault(case, []).append((when, i, ev))
    out = []
    for case in sorted(by_case):
        evs = sorted(by_case[case], key=lambda x: (x[0], x[1]))
        first, last = evs[0][0], evs[-1][0]
        acts = [str(e[COL_ACTIVITY]) for _, _, e in evs]
        offers = [e for _, _, e in evs if str(e[COL_ACTIVITY]) == "O_Create Offer"]
        offer = offers[-1] if offers else {}
        head = evs[0][2]
        outcome = ("pending" if "A_Pending" in acts else "denied" if "A_Denied" in acts
                   else "cancelled" if "A_Cancelled" in acts else "open")
        hours = int((last - first).total_seconds() // 3600)
        values = {
            "requested_amount": _num(head.get("case:RequestedAmount")),
            "credit_score": max((_num(o.get("CreditScore")) for o in offers), default=0.0),
            "offered_amount": _num(offer.get("OfferedAmount")),
            "monthly_cost": _num(offer.get("MonthlyCost")),
            "number_of_terms": _num(offer.get("NumberOfTerms")),
            "first_withdrawal": _num(offer.get("FirstWithdrawalAmount")),
            "n_offers": float(len(offers)),
            "n_events": float(len(evs)),
            "n_incomplete": float(acts.count("A_Incomplete")),
            "n_calls": float(acts.count("W_Call after offers")),
            "elapsed_hours": float(hours),
            "application_new": 1.0 if head.get("case:ApplicationType") == "New credit" else 0.0,
        }
        out.append(LoanCase(case, values, outcome, hours))
    return out


def _canonical_row(row: Mapping[str, Any], header: list[str]) -> dict[str, Any]:
    out = dict(row)
    for canon, names in ALIASES.items():
        if canon not in out:
            for name in names:
                if name in row:
                    out[canon] = row[name]
                    break
    return out


def load_cases(path: str | Path) -> list[LoanCase]:
    """Read a BPI 2017 log as CSV (published column names or common aliases) or XES."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise MotorInputError(f"cannot read {path}: {exc.strerror}") from None
    if size > MAX_LOG_BYTES:
        raise MotorInputError(f"{path}: {size} bytes is more than {MAX_LOG_BYTES}")
    if path.suffix.lower() == ".xes":
        return cases_from_events(read_xes(path))
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    header = list(reader.fieldnames or [])
    for canon, names in ALIASES.items():
        if not any(n in header for n in names):
            raise MotorInputError(f"{path}: no column {canon!r} (or {', '.join(names[1:])})")
    cases = cases_from_events(_canonical_row(r, header) for r in reader)
    if not cases:
        raise MotorInputError(f"{path}: no events")
    return cases


def read_xes(path: str | Path) -> list[dict[str, Any]]:
    """Events of an XES log, each with its trace's attributes prefixed `case:`."""
    events: list[dict[str, Any]] = []
    trace: dict[str, Any] = {}
    current: dict[str, Any] | None = None
    try:
        for kind, elem in ET.iterparse(str(path), events=("start", "end")):
            tag = elem.tag.rsplit("}", 1)[-1]
            if kind == "start":
                if tag == "trace":
                    trace = {}
                elif tag == "event":
                    current = {}
                continue
            if tag in ("string", "date", "float", "int", "boolean", "id") and "key" in elem.attrib:
                target = current if current is not None else trace
                target[elem.attrib["key"]] = elem.attrib.get("value", "")
            elif tag == "event" and current is not None:
                row = dict(current)
                for k, v in trace.items():
                    row[f"case:{k}"] = v
                events.append(row)
                current = None
                elem.clear()
            elif tag == "trace":
                elem.clear()
    except ET.ParseError as exc:
        raise MotorInputError(f"{path}: malformed XES ({exc})") from None
    return events


def demo_events(n_cases: int, seed: int) -> list[dict[str, Any]]:
    """A seeded BPI-2017-shaped event log of `n_cases` applications, as CSV-ready rows.

    Outcomes follow the same applicant model as the game (heavy repayments and long
    waits drive cancellations; low scores are denied), so genes have something to learn.
    """
    if n_cases < 1:
        raise MotorInputError("n_cases must be at least 1")
    rng = np.random.default_rng(seed)
    goals = ("Car", "Home improvement", "Existing loan takeover", "Other, see explanation")
    t0 = datetime(2016, 1, 1, 8, tzinfo=UTC)
    rows: list[dict[str, Any]] = []
    for i in range(n_cases):
        case = f"Application_{1000000 + i}"
        requested = float(np.round(np.exp(rng.normal(np.log(15000), 0.7)), -2))
        head = {"case:concept:name": case,
                "case:ApplicationType": "New credit" if rng.random() < 0.9 else "Limit raise",
                "case:LoanGoal": goals[int(rng.integers(len(goals)))],
                "case:RequestedAmount": requested}
        now = t0 + timedelta(hours=float(rng.uniform(0, 24 * 300)))

        def add(activity: str, origin: str, extra: Mapping[str, Any] | None = None,
                head: dict[str, Any] = head) -> None:
            nonlocal now
            now += timedelta(hours=float(rng.exponential(20.0)))
            rows.append({**head, "concept:name": activity, "lifecycle:transition": "complete",
                         "time:timestamp": now.isoformat(timespec="milliseconds"),
                         "org:resource": f"User_{int(rng.integers(1, 150))}",
                         "EventOrigin": activity[0].replace("A", "Application")
                         .replace("O", "Offer").replace("W", "Workflow"), **(extra or {})})

        add("A_Create Application", "Application")
        add("A_Submitted", "Application")
        add("A_Concept", "Application")
        add("A_Accepted", "Application")
        score = float(np.clip(rng.normal(800, 180), 0, 1100)) if rng.random() < 0.8 else 0.0
        n_offers = 1 + int(rng.random() < 0.3)
        for k in range(n_offers):
            offered = float(np.round(requested * rng.uniform(0.9, 1.2), -2))
            terms = float(rng.choice([36, 48, 60, 72, 96, 120]))
            rate = rng.uniform(0.03, 0.12)
            monthly = float(np.round(offered * (1 + rate * terms / 12) / terms, 2))
            add("O_Create Offer", "Offer", {
                "OfferID": f"Offer_{i}_{k}", "OfferedAmount": offered, "MonthlyCost": monthly,
                "NumberOfTerms": terms, "FirstWithdrawalAmount": float(np.round(offered * 0.5)),
                "CreditScore": score, "Accepted": True, "Selected": k == n_offers - 1})
            add("O_Sent (mail and online)", "Offer")
        calls = int(rng.poisson(1.5))
        for _ in range(calls):
            add("W_Call after offers", "Workflow")
        add("A_Complete", "Application")
        incomplete = int(rng.poisson(0.5))
        for _ in range(incomplete):
            add("A_Incomplete", "Application")
        burden = monthly * terms / offered - 1.0
        pd = 1 / (1 + np.exp((score - 550) / 60)) if score > 0 else PD_NO_SCORE
        u = 1.0 - 1.5 * burden + 0.1 * calls - 0.3 * incomplete + UTILITY_NOISE * rng.normal()
        if rng.random() < pd:
            add("A_Denied", "Application")
            add("O_Refused", "Offer")
        elif u < OUTSIDE_OPTION:
            add("A_Cancelled", "Application")
            add("O_Cancelled", "Offer")
        else:
            add("A_Validating", "Application")
            add("O_Accepted", "Offer")
            add("A_Pending", "Application")
    return rows


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Write event rows with the published BPI 2017 columns (demo data for the CLI)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
