"""M_P, Praxeological: does this means reach this end, by our own experience?

Two parts, per state:

* applicability a ∈ [0, 1] of the gene's codons (graded, `condition.applicability`);
* a Beta posterior of success. Prior Beta(α0, β0) from related genes through synapses
  (`prior_from_related`). Each of the gene's experiences adds its outcome with a weight
  w = exp(−d² / 2h²), d² the mean squared difference of the experience's state from this
  state in units of the domain's feature scales (over the pack's `similarity`
  features), over the k nearest experiences only:
  α = α0 + Σ w·y, β = β0 + Σ w·(1 − y).

The domain's history (experiences of other genes of the domain that take the same
action: the outcome of this means in nearby states) adds its kernel weights too, each
counting DOMAIN_WEIGHT of one of the gene's own: a new gene starts from what the domain
has seen, not from a coin flip. `n_eff` is all the weight, own and domain.

Hierarchical fallback (ADR 0035). Far from every experience the kernel weights vanish and
the posterior would fall back to the prior alone; the flat Beta(1, 1) says p = 0.5, which
is no one's experience. So the prior also holds the gene's own success rate over ALL its
experiences (recorded where its condition held) and the domain's history (at
DOMAIN_WEIGHT), shrunk towards the related-gene prior, with HISTORY_STRENGTH
pseudo-observations (`prior_from_history`): near its evidence the local outcomes decide,
far from it the gene's track record does. Those pseudo-observations are not evidence:
`prior_n` (what α + β holds that no experience near this state put there) lets the
needs-evidence verdict and the veto count only the kernel-weighted experiences. A gene with
no history at all (none of its own, none of the domain's) keeps the related/flat prior.

Score = a · E[p] = a · α / (α + β). Veto where a < apply_min (the gene does not apply) or
where the evidence is strong enough (Σ w ≥ min_evidence) and the upper one-sided 95 %
credible bound is below the domain's floor. The bound uses the normal approximation to
the Beta (mean + 1.645·sd), which is within 0.02 of the exact quantile once α, β ≥ 5,
the regime in which `min_evidence` lets it veto.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gd.motors.backend import Array, Backend
from gd.motors.condition import CompiledGene, applicability
from gd.motors.domains.pack import DomainPack
from gd.motors.errors import MotorInputError

VERSION = "3"
K_NEIGHBOURS = 32          # experiences consulted per state
BANDWIDTH = 1.0            # kernel width h, in feature scales (RMS over features)
Z_UPPER = 1.6448536269514722   # one-sided 95 %
PRIOR_BASE = 2.0           # pseudo-observations of the flat prior Beta(1, 1)
PRIOR_MAX_EXTRA = 8.0      # related genes add at most this many pseudo-observations
PRIOR_SHRINK = 0.1         # a related gene's experiences count one tenth as much
KNN_CHUNK_ELEMENTS = 4_000_000   # bounds the (states × experiences) distance block
# Another gene's outcome with the same action in a nearby state is evidence about this
# means, but the gene's own conditions and parameters differ: it counts half as much.
DOMAIN_WEIGHT = 0.5
# Pseudo-observations the gene's (and the domain's) overall success rate adds to the prior.
# Chosen on FD001 training engines only by nested cross-validated policy cost (ADR 0035,
# bench/validation_policy.py); 0 turns the fallback off.
HISTORY_STRENGTH = 8.0


@dataclass(frozen=True)
class RelatedGene:
    """A neighbour through a synapse: its weight, its counters, and whether it inhibits
    (an inhibiting gene's success argues for our failure)."""

    weight: float
    successes: int
    failures: int
    inhibits: bool = False


def prior_from_related(related: Sequence[RelatedGene]) -> tuple[float, float]:
    """Beta prior (α0, β0): flat Beta(1, 1) pulled towards related genes' success rates."""
    total_w = sum(r.weight for r in related)
    if not related or total_w <= 0.0:
        return 1.0, 1.0
    mean = 0.0
    extra = 0.0
    for r in related:
        rate = (r.successes + 1.0) / (r.successes + r.failures + 2.0)
        mean += r.weight * (1.0 - rate if r.inhibits else rate)
        extra += r.weight * (r.successes + r.failures) * PRIOR_SHRINK
    mean /= total_w
    strength = PRIOR_BASE + min(PRIOR_MAX_EXTRA, extra)
    # Blend with the flat prior so that the pseudo-counts never fall below 1 each.
    m = (mean * (strength - PRIOR_BASE) + 0.5 * PRIOR_BASE) / strength
    return m * strength, (1.0 - m) * strength


def prior_from_history(base: tuple[float, float], own_y: np.ndarray,
                       domain_y: np.ndarray | None = None,
                       strength: float = HISTORY_STRENGTH) -> tuple[float, float, float]:
    """(α0, β0, pseudo): `base` (the related-gene prior) plus `strength` pseudo-observations
    at the overall success rate of the gene's experiences and (at DOMAIN_WEIGHT) the
    domain's, that rate itself shrunk towards `base`'s mean. `pseudo` is what was added
    (0 without any history): prior, not evidence (module docstring)."""
    a0, b0 = base
    if a0 <= 0 or b0 <= 0:
        raise MotorInputError(f"prior ({a0}, {b0}) must be positive")
    if not np.isfinite(strength) or strength < 0:
        raise MotorInputError(f"history strength must be finite and ≥ 0, got {strength}")
    own = np.asarray(own_y, dtype=np.float64)
    dom = np.zeros(0) if domain_y is None else np.asarray(domain_y, dtype=np.float64)
    n = len(own) + DOMAIN_WEIGHT * len(dom)
    if n == 0 or strength == 0:
        return a0, b0, 0.0
    successes = float(own.sum()) + DOMAIN_WEIGHT * float(dom.sum())
    rate = (successes + a0) / (n + a0 + b0)
    return a0 + strength * rate, b0 + strength * (1.0 - rate), float(strength)


@dataclass(frozen=True)
class PraxeologicalOutput:
    score: np.ndarray
    veto: np.ndarray
    applicability: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    n_eff: np.ndarray
    upper: np.ndarray
    # Pseudo-observations in α + β that are prior, not evidence (flat 2 + the history's).
    prior_n: float = 2.0


def kernel_sums(bk: Backend, pack: DomainPack, X: Array, ev_X: np.ndarray, ev_y: np.ndarray,
                k: int = K_NEIGHBOURS) -> tuple[Array, Array, Array]:
    """(Σ w·y, Σ w·(1 − y), Σ w) per state over the k nearest experiences."""
    n = X.shape[0]
    m = len(ev_y)
    if m == 0:
        return bk.zeros((n,)), bk.zeros((n,)), bk.zeros((n,))
    if ev_X.shape != (m, len(pack.features)):
        raise MotorInputError(f"experience states have shape {ev_X.shape}, expected "
                              f"({m}, {len(pack.features)})")
    mask = pack.similarity_mask()
    center, scale = bk.asarray(pack.center), bk.asarray(pack.scale / mask.clip(1e-300))
    q = (X - center) / scale
    e = (bk.asarray(ev_X) - center) / scale
    y = bk.asarray(ev_y)
    k = min(k, m)
    f = float(mask.sum())
    ee = bk.sum(e * e, axis=1)
    chunk = max(1, KNN_CHUNK_ELEMENTS // m)
    succ, fail, weights = [], [], []
    for start in range(0, n, chunk):
        qc = q[start:start + chunk]
        d2 = (bk.expand(bk.sum(qc * qc, axis=1), 1) + bk.expand(ee, 0)
              - 2.0 * bk.matmul(qc, e.T)) / f
        d2 = bk.maximum(d2, 0.0)
        near, idx = bk.topk_smallest(d2, k)
        w = bk.exp(-near / (2.0 * BANDWIDTH**2))
        yk = bk.take(y, idx, axis=0)
        succ.append(bk.sum(w * yk, axis=1))
        fail.append(bk.sum(w * (1.0 - yk), axis=1))
        weights.append(bk.sum(w, axis=1))
    return bk.concat(succ), bk.concat(fail), bk.concat(weights)


def posterior(bk: Backend, pack: DomainPack, X: Array, ev_X: np.ndarray, ev_y: np.ndarray,
              prior: tuple[float, float], k: int = K_NEIGHBOURS,
              domain: tuple[np.ndarray, np.ndarray] | None = None
              ) -> tuple[Array, Array, Array]:
    """(α, β, Σw) per state from the k nearest experiences, own and (discounted) the
    domain's (see module docstring)."""
    a0, b0 = prior
    if a0 <= 0 or b0 <= 0:
        raise MotorInputError(f"prior ({a0}, {b0}) must be positive")
    s, f, w = kernel_sums(bk, pack, X, ev_X, ev_y, k)
    if domain is not None and len(domain[1]):
        ds, df, dw = kernel_sums(bk, pack, X, domain[0], domain[1], k)
        s, f, w = s + DOMAIN_WEIGHT * ds, f + DOMAIN_WEIGHT * df, w + DOMAIN_WEIGHT * dw
    return a0 + s, b0 + f, w


def praxeological(bk: Backend, pack: DomainPack, cg: CompiledGene, X: Array,
                  ev_X: np.ndarray, ev_y: np.ndarray, prior: tuple[float, float],
                  k: int = K_NEIGHBOURS, domain: tuple[np.ndarray, np.ndarray] | None = None,
                  prior_n: float = PRIOR_BASE) -> PraxeologicalOutput:
    """M_P per state; `prior` is the full prior (`prior_from_history`), `prior_n` how many
    of its pseudo-observations are not evidence (recorded for the needs-evidence verdict)."""
    cfg = pack.config
    a = applicability(bk, cg, X)
    alpha, beta, n_eff = posterior(bk, pack, X, ev_X, ev_y, prior, k, domain)
    total = alpha + beta
    mean = alpha / total
    sd = bk.sqrt(alpha * beta / (total * total * (total + 1.0)))
    upper = bk.clip(mean + Z_UPPER * sd, 0.0, 1.0)
    veto = (a < cfg.apply_min) | ((n_eff >= cfg.min_evidence) & (upper < cfg.floor))
    n = bk.to_numpy
    return PraxeologicalOutput(score=n(a * mean), veto=n(veto), applicability=n(a),
                               alpha=n(alpha), beta=n(beta), n_eff=n(n_eff), upper=n(upper),
                               prior_n=float(prior_n))
