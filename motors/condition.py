"""A gene's condition compiled to arrays: crisp firing and graded applicability.

Every codon is `Σ w_f · x_f  <op>  threshold`. Compiled, a gene is a weight matrix
(codons × domain features), a threshold per codon and an operator code per codon, so a
batch of states is tested with one matrix product.

Graded applicability softens each comparison with a logistic of width τ = SOFTNESS ×
(the codon's typical spread, from the domain's feature scales): a state exactly on the
threshold applies 0.5, one τ inside 0.73, one τ outside 0.27. The codons combine by
product (a soft AND), so the gene applies fully only where every codon holds clearly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gd.genome import Gene
from gd.motors.backend import Array, Backend
from gd.motors.domains.pack import DomainPack
from gd.motors.errors import MotorInputError

OP_CODES = {">": 0, ">=": 1, "<": 2, "<=": 3, "==": 4, "!=": 5}
OP_NAMES = tuple(OP_CODES)
# Which sides of the threshold satisfy each operator: (above, equal, below).
OP_TABLE = np.array([
    [True, False, False], [True, True, False], [False, False, True], [False, True, True],
    [False, True, False], [True, False, True]])
# Width of the graded transition, as a fraction of the codon's typical spread. A quarter
# of a spread keeps applicability crisp away from the threshold yet continuous across it.
SOFTNESS = 0.25


@dataclass(frozen=True)
class CompiledGene:
    weights: np.ndarray      # (codons, features)
    thresholds: np.ndarray   # (codons,)
    ops: np.ndarray          # (codons,) codes from OP_CODES
    softness: np.ndarray     # (codons,) τ per codon
    action: int
    default_action: int


def compile_gene(gene: Gene, pack: DomainPack) -> CompiledGene:
    if gene.domain != pack.name:
        raise MotorInputError(f"gene {gene.id} is in domain {gene.domain!r}, "
                              f"the pack is {pack.name!r}")
    n_feat = len(pack.features)
    weights = np.zeros((len(gene.codons), n_feat))
    for c, codon in enumerate(gene.codons):
        for name, w in codon.terms:
            if name not in pack.features:
                raise MotorInputError(
                    f"gene {gene.id} codon {c} uses feature {name!r}, unknown to domain "
                    f"{pack.name!r}")
            weights[c, pack.features.index(name)] = w
    spread = np.sqrt(((weights * pack.scale) ** 2).sum(axis=1))
    return CompiledGene(
        weights=weights,
        thresholds=np.array([c.threshold for c in gene.codons]),
        ops=np.array([OP_CODES[c.op] for c in gene.codons], dtype=np.int64),
        softness=SOFTNESS * np.maximum(spread, 1e-12),
        action=pack.action_index(gene.action),
        default_action=pack.action_index(pack.default_action),
    )


def lhs(bk: Backend, cg: CompiledGene, X: Array) -> Array:
    """Left-hand side of every codon on every state: (states, codons)."""
    return bk.matmul(X, bk.asarray(cg.weights.T))


def fires(bk: Backend, cg: CompiledGene, X: Array) -> Array:
    """Crisp condition: every codon holds. Boolean (states,)."""
    d = lhs(bk, cg, X) - bk.asarray(cg.thresholds)
    table = bk.asbool(OP_TABLE[cg.ops])                         # (codons, 3)
    ok = ((d > 0) & table[:, 0]) | ((d == 0) & table[:, 1]) | ((d < 0) & table[:, 2])
    return bk.all(ok, axis=1)


def applicability(bk: Backend, cg: CompiledGene, X: Array) -> Array:
    """Graded applicability in [0, 1] per state (product of soft codon truths)."""
    u = (lhs(bk, cg, X) - bk.asarray(cg.thresholds)) / bk.asarray(cg.softness)
    above = bk.sigmoid(u)
    near = bk.exp(-0.5 * u * u)
    ops = cg.ops
    parts = []
    for c in range(len(ops)):
        op = int(ops[c])
        if op in (0, 1):
            parts.append(above[:, c])
        elif op in (2, 3):
            parts.append(1.0 - above[:, c])
        elif op == 4:
            parts.append(near[:, c])
        else:
            parts.append(1.0 - near[:, c])
    out = parts[0]
    for p in parts[1:]:
        out = out * p
    return out
