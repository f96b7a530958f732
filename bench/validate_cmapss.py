"""Validate the turbofan pack on the real NASA C-MAPSS FD001 data (never copied here).

Genes such as "inspect when s11 > 47.5" are scored on every cycle of the even-numbered
engines; their experiences come from the odd-numbered engines, labelled from the true
remaining useful life (RUL): an inspection succeeds when the engine fails within
LEAD_CYCLES (not needlessly early), a `continue` succeeds when it does not. The report
shows each motor's spread (they must vary with the state and the evidence), CP
quantiles, band counts and the AUC of CP against the RUL-based ground truth.

Usage: python bench/validate_cmapss.py [DATA_DIR]   (default ../shared/data/cmapss)
Writes bench/results/validate_cmapss.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from gd.genome import Codon, Experience, Gene, NodeKey, StateVector
from gd.motors.craft import band_for
from gd.motors.domains import get_domain
from gd.motors.domains.turbofan import FEATURES, load_cmapss, rul_for_train
from gd.motors.evaluate import EvaluationRequest, Evidence, score_states

LEAD_CYCLES = 30          # an inspection this close to failure is a good decision
MAX_EXPERIENCES = 2000    # evidence rows per gene, from the odd-numbered engines
CHUNK = 2500
OUT = Path(__file__).parent / "results" / "validate_cmapss.json"
GENES = [
    ("inspect-s11-47.5", [("s11", ">", 47.5)], "inspect"),
    ("inspect-s11-47.8", [("s11", ">", 47.8)], "inspect"),
    ("overhaul-late", [("s11", ">", 48.1), ("s4", ">", 1425.0)], "overhaul"),
    ("continue-healthy", [("s11", "<", 47.6)], "continue"),
]


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Mann–Whitney AUC: P(score of a good decision > score of a bad one), ties half."""
    pos, neg = score[label], score[~label]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="stable")
    allv = np.concatenate([pos, neg])[order]
    ranks = np.empty(len(allv))
    i = 0
    while i < len(allv):
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty(len(allv))
    r[order] = ranks
    return float((r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def main() -> None:
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data/cmapss")
    rows = load_cmapss(data / "train_FD001.txt")
    rul = rul_for_train(rows)
    pack = get_domain("turbofan")
    key = NodeKey.from_seed(b"v" * 32)
    odd = rows[:, 0] % 2 == 1
    test_X, test_rul = rows[~odd], rul[~odd]
    report = {"data": str(data), "rows_scored": len(test_X), "genes": {}}
    req = EvaluationRequest(monte_carlo_n=256, epsilon=0.05, cap=512)
    for name, codons, action in GENES:
        gene = Gene.create(key, domain="turbofan", name=name, action=action,
                           codons=[Codon.simple(*c) for c in codons])

        def good(r: np.ndarray, action: str = action) -> np.ndarray:
            near = r <= LEAD_CYCLES
            return ~near if action == "continue" else near

        fired = np.array([all(c.holds(dict(zip(FEATURES, x, strict=True)))
                              for c in gene.codons) for x in rows[odd]])
        ev_rows = np.flatnonzero(fired)[:: max(1, fired.sum() // MAX_EXPERIENCES)]
        labels = good(rul[odd][ev_rows])
        evidence = Evidence(tuple(
            Experience(gene.id, gene.version_hash.hex(),
                       StateVector("turbofan", dict(zip(FEATURES, map(float, rows[odd][i]),
                                                        strict=True))),
                       bool(y), int(k) + 1, "")
            for k, (i, y) in enumerate(zip(ev_rows, labels, strict=True))))
        parts = [score_states(gene, test_X[s:s + CHUNK], seed=7, evidence=evidence,
                              request=req) for s in range(0, len(test_X), CHUNK)]
        cat = {m: np.concatenate([getattr(p, m).score for p in parts])
               for m in ("mp", "mn", "mc", "mm")}
        cp = np.concatenate([p.cp for p in parts])
        vetoed = np.concatenate([p.vetoed for p in parts])
        bands: dict[str, int] = {}
        for v, c in zip(vetoed, cp, strict=True):
            b = "vetoed (motor)" if v else band_for(float(c), pack.config.bands)[0]
            bands[b] = bands.get(b, 0) + 1
        truth = good(test_rul)
        applies = ~np.concatenate([p.mp.veto for p in parts])
        report["genes"][name] = {
            "experiences": len(evidence.experiences),
            "experience_success_rate": float(labels.mean()) if len(labels) else None,
            "motor_mean": {m: float(v.mean()) for m, v in cat.items()},
            "motor_std": {m: float(v.std()) for m, v in cat.items()},
            "cp_quantiles": {q: float(np.quantile(cp, float(q))) for q in
                             ("0.05", "0.25", "0.5", "0.75", "0.95")},
            "bands": bands,
            "auc_cp_vs_rul_truth": auc(cp, truth),
            "auc_where_gene_applies": auc(cp[applies], truth[applies]),
        }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"{'gene':<20}{'M_P sd':>8}{'M_N sd':>8}{'M_C sd':>8}{'M_M sd':>8}{'CP p50':>8}"
          f"{'AUC':>7}{'AUC|app':>9}  bands")
    for name, g in report["genes"].items():
        sd = g["motor_std"]
        print(f"{name:<20}{sd['mp']:>8.3f}{sd['mn']:>8.3f}{sd['mc']:>8.3f}{sd['mm']:>8.3f}"
              f"{g['cp_quantiles']['0.5']:>8.3f}{g['auc_cp_vs_rul_truth']:>7.3f}"
              f"{g['auc_where_gene_applies']:>9.3f}  {g['bands']}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
