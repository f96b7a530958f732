"""Ranking metrics of the validation report (bench/validate_cmapss.py)."""

from __future__ import annotations

import numpy as np


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Mann–Whitney AUC: P(score of a good decision > score of a bad one), ties half."""
    pos, neg = score[label], score[~label]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="stable")
    sorted_v = allv[order]
    ranks = np.empty(len(allv))
    i = 0
    while i < len(allv):
        j = i
        while j + 1 < len(allv) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty(len(allv))
    r[order] = ranks
    return float((r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def roc(score: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC points (false positive rate, true positive rate), highest score first."""
    order = np.argsort(-score, kind="stable")
    y = label[order]
    tpr = np.r_[0.0, np.cumsum(y) / max(1, y.sum())]
    fpr = np.r_[0.0, np.cumsum(~y) / max(1, (~y).sum())]
    return fpr, tpr


def share(x: float | None) -> str:
    """A share as a percentage, or n/a where there was nothing to gain."""
    return "n/a" if x is None else f"{x:.0%}"
