"""Validation report of the turbofan motors on the real NASA C-MAPSS data (never copied).

Evidence comes from FD001 *train* only (each gene back-tested on it exactly as
`gd-node experiences import` does); everything is scored on FD001 *test* and FD003
*test*, whose true RUL is in RUL_FD00x.txt. Nothing is fitted on test data.

* ROC of CP against the ground truth (inspect: RUL ≤ 30; continue: RUL > 30) per gene,
  with and without the learned evidence;
* CP over engine life for a few test engines;
* each motor's score distribution;
* a maintenance policy simulation (`gd.motors.domains.maintenance`, cost model there):
  acting on CP verdicts vs the best fixed-threshold rule tuned on FD001 training engines
  (truncated like the test files) vs perfect knowledge;
* the adaptation rate: of the genes whose verdict on their own history (FD001 train
  rows where they fire) is vetoed, the share for which M_M found a variant that beats
  the gene on held-out engines (`gd.motors.holdout`, as `gd-node adapt` judges it), and
  how each winner and its parent then fare on FD001 and FD003 test against the truth.

Usage: python bench/validate_cmapss.py [DATA_DIR]   (default ../shared/data/cmapss)
Writes bench/results/validation/{index.html, report.json, *.png}.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import validation_policy as vp  # bench/ (the script's own folder, first on sys.path)
from validation_metrics import auc, roc
from validation_report import print_summary, render_html

from gd.genome import Codon, Experience, Gene, NodeKey
from gd.motors import holdout
from gd.motors.backend import get_backend
from gd.motors.condition import compile_gene, fires
from gd.motors.craft import BAND_VETOED, cp_bounds
from gd.motors.domains import demo_genes, get_domain
from gd.motors.domains import maintenance as mt
from gd.motors.domains.turbofan import (
    COST_FAILURE,
    COST_INSPECT,
    FEATURES,
    HORIZON,
    cmapss_record,
    load_cmapss,
    rul_for_test,
    rul_for_train,
)
from gd.motors.evaluate import EvaluationRequest, Evidence, evaluate, score_states
from gd.motors.meristic import SearchConfig
from gd.motors.praxeological import HISTORY_STRENGTH
from gd.node.app.decisions import MAX_ADAPT_STATES
from gd.node.app.history_import import back_test

OUT = Path(__file__).parent / "results" / "validation"
CHUNK = 2500
SEED = 7
REQUEST = EvaluationRequest(monte_carlo_n=256, epsilon=0.05, cap=512)
GENES = [
    ("inspect-s11-47.5", [("s11", ">", 47.5)], "inspect"),
    ("inspect-hot-hpc", [("s11", ">", 47.8)], "inspect"),
    ("inspect-low-s12", [("s12", "<", 520.6)], "inspect"),
    ("continue-healthy", [("s11", "<", 47.6)], "continue"),
]
POLICY_GENE = "inspect-s11-47.5"
TESTS = ("FD001", "FD003")
FOLDS = 5
APPLY_MIN = get_domain("turbofan").config.apply_min
W_P = float(get_domain("turbofan").config.weights.get("M_P", 1.0))
BAND_GRID = np.round(np.arange(0.02, 0.81, 0.01), 2)
# M_M's search as `gd-node adapt` runs it by default (population 4096, 20 generations).
ADAPT_SEARCH = SearchConfig(population=4096, generations=20, top=5)
RULE_SENSORS = ("s2", "s3", "s4", "s7", "s8", "s11", "s12", "s13", "s15", "s17", "s20", "s21")


@dataclass(frozen=True)
class Scored:
    """Per-row outputs kept for the report: CP, needs-evidence, M_P's applicability,
    every motor's score, and M_P's posterior success mean p where the gene applies (0
    elsewhere): for an inspect gene a calibrated P(RUL ≤ HORIZON) from the history."""

    cp: np.ndarray
    needs: np.ndarray
    applies: np.ndarray
    motors: dict[str, np.ndarray]
    p: np.ndarray
    cp_hi: np.ndarray

    def rows(self) -> vp.Rows:
        return vp.Rows(self.cp, self.cp_hi, self.needs)


def scores(gene: Gene, X: np.ndarray, evidence: Evidence | None) -> Scored:
    parts = [score_states(gene, X[s:s + CHUNK], seed=SEED, evidence=evidence, request=REQUEST)
             for s in range(0, len(X), CHUNK)]
    return Scored(
        cp=np.concatenate([p.cp for p in parts]),
        needs=np.concatenate([p.needs_evidence for p in parts]),
        applies=np.concatenate([p.mp.applicability >= APPLY_MIN for p in parts]),
        motors={m: np.concatenate([getattr(p, m).score for p in parts])
                for m in ("mp", "mn", "mc", "mm")},
        p=np.concatenate([np.where(p.mp.applicability >= APPLY_MIN,
                                   p.mp.alpha / (p.mp.alpha + p.mp.beta), 0.0)
                          for p in parts]),
        cp_hi=np.concatenate([cp_bounds(p.cp, p.mp.alpha, p.mp.beta, W_P)[1] for p in parts]))


def evidence_from(gene: Gene, rows: np.ndarray, rul: np.ndarray,
                  strength: float = HISTORY_STRENGTH) -> Evidence:
    """The gene back-tested on run-to-failure `rows` (as `experiences import` does), M_P's
    history fallback at `strength` pseudo-observations (ADR 0035)."""
    idx, labels = back_test(gene, cmapss_record(rows, rul))
    states = get_domain("turbofan").states(rows[idx])
    return Evidence(tuple(Experience(gene.id, gene.version_hash.hex(), s, bool(y), k + 1, "")
                          for k, (s, y) in enumerate(zip(states, labels, strict=True))),
                    history_strength=strength)


def cross_fitted_cp(gene: Gene, train: np.ndarray, rul: np.ndarray,
                    strength: float = HISTORY_STRENGTH) -> Scored:
    """CP on every training row with evidence from the other FOLDS' engines only, so a
    band fitted on it has not seen the rows it is scored on."""
    fold = train[:, 0].astype(np.int64) % FOLDS
    cp, needs = np.zeros(len(train)), np.zeros(len(train), dtype=bool)
    p, cp_hi = np.zeros(len(train)), np.zeros(len(train))
    for f in range(FOLDS):
        held, rest = fold == f, fold != f
        sc = scores(gene, train[held], evidence_from(gene, train[rest], rul[rest], strength))
        cp[held], needs[held], p[held], cp_hi[held] = sc.cp, sc.needs, sc.p, sc.cp_hi
    return Scored(cp, needs, np.zeros(0, dtype=bool), {}, p, cp_hi)


def fitted_bands(threshold: float) -> list[list[object]]:
    """The pack's bands with the approve band starting at the fitted CP level."""
    return [[0.0, "vetoed", "adapt"], [threshold, "approved", "approve"],
            [max(0.81, round(threshold + 0.01, 2)), "candidate", "approve"]]


def _right_share(gene: Gene, rows: np.ndarray, rul: np.ndarray) -> float:
    """Share of rows where the gene's policy (its action where it fires, continue
    elsewhere) is right by the truth: a shop action within HORIZON cycles of failure,
    continue before."""
    pack = get_domain("turbofan")
    on = np.asarray(fires(get_backend("numpy"), compile_gene(gene, pack), rows), dtype=bool)
    shop = np.where(on, gene.action != "continue", False)
    return float(np.mean(shop == (rul <= HORIZON)))


def adaptation(gene: Gene, train: np.ndarray, rul: np.ndarray, tests: dict,
               strength: float = HISTORY_STRENGTH) -> dict:
    """The gene's verdict on its own history and, if vetoed, M_M's held-out adaptation.

    History: the FD001 train rows where the gene fires (an even spread of at most
    MAX_ADAPT_STATES, as `adapt_gene` uses). The held-out engines are the ones
    `holdout.adapt_held_out` will keep from the search; the evidence comes from the
    *other* training engines, so neither the verdict on them nor the comparison there
    has seen their outcomes."""
    pack = get_domain("turbofan")
    idx, _ = back_test(gene, cmapss_record(train, rul), limit=MAX_ADAPT_STATES)
    if len(idx) < 2 * holdout.MIN_HELD_OUT:
        return {"fires_on_train": len(idx), "verdict": "does not fire", "vetoed": False}
    states = pack.states(train[idx], entities=[str(int(u)) for u in train[idx, 0]],
                         times=[int(c) for c in train[idx, 1]])
    _, held_rows = holdout.split_held_out(states, SEED)
    held_units = {int(states[i].entity) for i in held_rows}
    others = ~np.isin(train[:, 0].astype(int), list(held_units))
    ev = evidence_from(gene, train[others], rul[others], strength)
    decision = evaluate(gene, states, seed=SEED, evidence=ev, request=REQUEST)
    out: dict = {"fires_on_train": len(idx), "verdict": decision.verdict,
                 "band": decision.band, "cp": decision.cp,
                 "vetoed": decision.band == BAND_VETOED}
    if not out["vetoed"]:
        return out
    res = holdout.adapt_held_out(gene, states, seed=SEED, search=ADAPT_SEARCH, evidence=ev,
                                 request=REQUEST)
    out["held_out_engines"] = len(held_units)
    out["compared"] = len(res.compared)
    out["compared_cp_up"] = sum(c.cp_gain > 0 for c in res.compared)
    out["compared_cost_down"] = sum(c.cost_saving > 0 for c in res.compared)
    out["winners"] = []
    key = NodeKey.from_seed(b"w" * 32)
    for c in res.winners:
        child = Gene.create(key, domain="turbofan", name=f"{gene.name}~adapted",
                            action=c.variant.action, codons=list(c.variant.codons))
        on_test = {}
        for tname, (rows, trul) in tests.items():
            on_test[tname] = {"parent_right": _right_share(gene, rows, trul),
                              "variant_right": _right_share(child, rows, trul)}
        out["winners"].append({**c.to_plain(), "test": on_test})
    return out


def main() -> None:
    started = time.time()
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data/cmapss")
    key = NodeKey.from_seed(b"v" * 32)
    train = load_cmapss(data / "train_FD001.txt")
    train_rul = rul_for_train(train)
    tests = {}
    for name in TESTS:
        rows = load_cmapss(data / f"test_{name}.txt")
        tests[name] = (rows, rul_for_test(rows, data / f"RUL_{name}.txt"))
    OUT.mkdir(parents=True, exist_ok=True)
    report: dict = {"data": str(data), "evidence_from": "train_FD001.txt",
                    "lead_cycles": HORIZON, "genes": {}, "policy": {}}
    curves: dict = {}
    kept: dict = {}
    # -- M_P's history strength and the acting rule: FD001 train only, before any test --
    policy_gene = next(Gene.create(key, domain="turbofan", name=g, action=a,
                                   codons=[Codon.simple(*c) for c in cs])
                       for g, cs, a in GENES if g == POLICY_GENE)
    fits = {}
    for strength in vp.HISTORY_CANDIDATES:
        cv_s = cross_fitted_cp(policy_gene, train, train_rul, strength)
        fits[strength] = (cv_s, vp.choose(cv_s.rows(), train[:, 0], train[:, 1], train_rul,
                                          BAND_GRID, FOLDS))
    nested = {s: c.table[c.name]["nested_train"]["cost"] for s, (_, c) in fits.items()}
    strength = vp.choose_strength(nested)
    report["history_prior"] = {
        "chosen": strength, "incumbent": vp.HISTORY_INCUMBENT, "margin": vp.MARGIN,
        "daemon_default": HISTORY_STRENGTH,
        "candidates": {str(s): {"acting": c.name, "level": c.levels[c.name],
                                "nested_train": c.table[c.name]["nested_train"]}
                       for s, (_, c) in fits.items()},
        "how": "pseudo-observations of M_P's fallback to the gene's overall success rate "
               "(ADR 0035), chosen with the acting rule by nested cross-validated cost on "
               "FD001 train engines before any test file is scored"}
    cv, choice = fits[strength]
    for gname, codons, action in GENES:
        gene = Gene.create(key, domain="turbofan", name=gname, action=action,
                           codons=[Codon.simple(*c) for c in codons])
        evidence = evidence_from(gene, train, train_rul, strength)
        labels = np.array([e.success for e in evidence.experiences])
        entry: dict = {"experiences": len(labels),
                       "experience_success_rate": float(labels.mean()) if len(labels) else None}
        for tname, (rows, rul) in tests.items():
            truth = rul <= HORIZON if action != "continue" else rul > HORIZON
            res = {}
            for label, ev in (("without_evidence", None), ("with_evidence", evidence)):
                sc = scores(gene, rows, ev)
                app = sc.applies
                res[label] = {"auc": auc(sc.cp, truth),
                              "auc_where_applies": auc(sc.cp[app], truth[app]),
                              "needs_evidence_share": float(sc.needs.mean()),
                              "motor_auc": {m: auc(v, truth) for m, v in sc.motors.items()}}
                curves[(gname, tname, label)] = roc(sc.cp, truth)
                kept[(gname, tname, label)] = sc
            # What perfect evidence could reach with the same condition: p = 1 on the
            # rows where the gene applies and is right, 0 elsewhere (CP 0 off-condition).
            ceiling = auc((kept[(gname, tname, "without_evidence")].applies & truth)
                          .astype(float), truth)
            lift = res["with_evidence"]["auc"] - res["without_evidence"]["auc"]
            room = ceiling - res["without_evidence"]["auc"]
            res["auc_ceiling"] = ceiling
            res["headroom_gained"] = lift / room if room > 0 else None
            entry[tname] = res
        report["genes"][gname] = entry
    # -- policy simulation ------------------------------------------------------------
    cols = [FEATURES.index(s) for s in RULE_SENSORS]
    rule, train_cost = mt.tune_threshold(train, train[:, 0], train[:, 1], train_rul, cols,
                                         seed=1, quantiles=40)
    report["policy"]["cost_model"] = mt.__doc__.split("Cost model")[1].strip()
    report["policy"]["tuned_rule"] = {
        "feature": FEATURES[rule.column], "op": ">" if rule.above else "<",
        "threshold": rule.threshold, "train_cost": train_cost.to_plain()}
    level = choice.levels[choice.name]
    bands = fitted_bands(level)
    report["policy"]["fitted_bands"] = {
        "bands": bands, "folds": FOLDS,
        "train_cost": choice.table[choice.name]["train"],
        "acts_on": vp.ACTS_ON[choice.name],
        "how": f"approve level fitted on FD001 train: CP cross-fitted over {FOLDS} folds of "
               "engines (evidence from the other folds), lowest simulated cost on the "
               "same truncated engines as the tuned rule"}
    report["policy"]["acting"] = {
        "chosen": choice.name, "incumbent": vp.INCUMBENT, "margin": vp.MARGIN,
        "seeds": list(vp.SEEDS), "candidates": choice.table,
        "how": "how needs-evidence verdicts are acted on, chosen by nested cross-validated "
               "cost on FD001 train engines before any test file is scored "
               "(bench/validation_policy.py, ADR 0025)"}
    # Alternatives (docs/motors.md, "FD003"): M_P's calibrated p against the cost model's
    # break-even (nothing fitted), and p with its level fitted on train like the band.
    p_level, p_cost = mt.tune_score_threshold(cv.p, train[:, 0], train[:, 1], train_rul,
                                              seed=1, grid=BAND_GRID)
    report["policy"]["p_alternatives"] = {
        "break_even": COST_INSPECT / COST_FAILURE, "fitted_level": float(p_level),
        "fitted_train_cost": p_cost.to_plain()}
    for tname, (rows, rul) in tests.items():
        sc = kept[(POLICY_GENE, tname, "with_evidence")]
        act = vp.act(choice.name, sc.rows(), level)
        u, c = rows[:, 0], rows[:, 1]
        for name in vp.CANDIDATES:
            choice.table[name][tname] = mt.simulate(
                u, c, rul, vp.act(name, sc.rows(), choice.levels[name])).to_plain()
        report["policy"][tname] = {
            "cp_verdicts": mt.simulate(u, c, rul, act).to_plain(),
            "tuned_threshold": mt.simulate(u, c, rul, rule.alarm(rows)).to_plain(),
            "perfect_knowledge": mt.perfect(u, c, rul).to_plain(),
            "p_above_break_even": mt.simulate(
                u, c, rul, sc.p >= COST_INSPECT / COST_FAILURE).to_plain(),
            "p_level_fitted_on_train": mt.simulate(u, c, rul, sc.p >= p_level).to_plain()}
    # -- adaptation ---------------------------------------------------------------------
    adapt_genes = {g: (codons, action) for g, codons, action in GENES}
    for d in demo_genes("turbofan"):
        adapt_genes.setdefault(d["name"], ([(c["feature"], c["op"], c["threshold"])
                                            for c in d["codons"]], d["action"]))
    adapted = {}
    for gname, (codons, action) in adapt_genes.items():
        gene = Gene.create(key, domain="turbofan", name=gname, action=action,
                           codons=[Codon.simple(*c) for c in codons])
        adapted[gname] = adaptation(gene, train, train_rul, tests, strength)
    vetoed = [g for g, a in adapted.items() if a["vetoed"]]
    improved = [g for g in vetoed if adapted[g]["winners"]]
    report["adaptation"] = {
        "genes": adapted, "vetoed": vetoed, "improved": improved,
        "rate": len(improved) / len(vetoed) if vetoed else None,
        "how": "verdict on the gene's FD001 train history (rows where it fires), evidence "
               "from the other training engines; vetoed genes adapted by M_M "
               f"(population {ADAPT_SEARCH.population}, {ADAPT_SEARCH.generations} "
               "generations); a winner beats the gene on held-out training engines in "
               "both mean CP and policy cost; rate = vetoed genes with a winner / vetoed "
               "genes"}
    report["seconds"] = time.time() - started
    _plots(report, curves, kept, tests)
    (OUT / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (OUT / "index.html").write_text(render_html(report, TESTS))
    print_summary(report, TESTS, OUT)


def _plots(report: dict, curves: dict, kept: dict, tests: dict) -> None:
    for tname in TESTS:
        fig, ax = plt.subplots(figsize=(6, 5))
        for gname, *_ in GENES:
            for label, style in (("with_evidence", "-"), ("without_evidence", ":")):
                fpr, tpr = curves[(gname, tname, label)]
                a = report["genes"][gname][tname][label]["auc"]
                ax.plot(fpr, tpr, style, label=f"{gname} {label.replace('_', ' ')} ({a:.3f})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
        ax.set(xlabel="false positive rate", ylabel="true positive rate",
               title=f"ROC of CP vs RUL truth, {tname} test")
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(OUT / f"roc_{tname}.png", dpi=90)
        plt.close(fig)
    rows, rul = tests["FD001"]
    sc = kept[(POLICY_GENE, "FD001", "with_evidence")]
    fig, ax = plt.subplots(figsize=(7, 4))
    for unit in (int(u) for u in np.unique(rows[:, 0])[rul[np.r_[
            np.flatnonzero(np.diff(rows[:, 0])), len(rows) - 1]].argsort()[:4]]):
        sel = rows[:, 0] == unit
        ax.plot(-rul[sel], sc.cp[sel], label=f"engine {unit}")
    ax.axvline(-HORIZON, color="grey", lw=0.5)
    ax.set(xlabel="−RUL (cycles; failure at 0)", ylabel="CP",
           title=f"CP over life, {POLICY_GENE}, FD001 test")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "cp_over_life.png", dpi=90)
    plt.close(fig)
    fig, axes = plt.subplots(1, 4, figsize=(12, 3))
    for ax, (m, v) in zip(axes, sc.motors.items(), strict=True):
        ax.hist(v, bins=40)
        ax.set(title={"mp": "M_P", "mn": "M_N", "mc": "M_C", "mm": "M_M"}[m])
    fig.suptitle(f"motor scores, {POLICY_GENE}, FD001 test, with evidence", fontsize=9)
    fig.tight_layout()
    fig.savefig(OUT / "motors.png", dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    names = ("cp_verdicts", "tuned_threshold", "perfect_knowledge")
    for i, tname in enumerate(TESTS):
        costs = [report["policy"][tname][n]["cost"] for n in names]
        ax.bar(np.arange(3) + 0.4 * i, costs, width=0.4, label=f"{tname} test")
    ax.set_xticks(np.arange(3) + 0.2, ["CP verdicts", "tuned threshold", "perfect"])
    ax.set(ylabel="total cost (failure = 100)", title="maintenance policy cost")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "policy.png", dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
