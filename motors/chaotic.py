"""M_C, Chaotic: does the decision still hold when the world wobbles?

Monte Carlo over the domain's noise and transition model. Each future ω draws standard
normals z (states × `noise_dims`) and the pack returns every action's loss L(a, ω).

* Acceptable: the gene's action g is within the domain's tolerance of the best action
  in that future, L(g, ω) ≤ min_a L(a, ω) + tolerance (hindsight regret). Share p̂ with a
  Wilson score interval (z = 1.96).
* Sequential: futures are drawn in batches of `monte_carlo_n` until the widest
  interval half-width over the batch of states is ≤ `epsilon`, or `cap` futures. The
  guarantee: with `cap` reached the half-width is at most 1.96·√(¼/cap).
* CVaR_α of the loss: the mean of the worst ⌈(1 − α)N⌉ losses, divided by the domain's
  loss scale. Veto when it exceeds the domain's `cvar_limit`.
* Flip rate: share of FLIP_SAMPLES small perturbations of the state (FLIP_SCALE feature
  scales) that change whether the gene fires.
* Divergence (Lyapunov-style): two futures from states DIVERGENCE_DELTA apart, same
  noise (the first DIVERGENCE_FUTURES futures); λ = mean over futures of
  (log|Δ_H| − log|Δ_1|)/(H − 1) of the pack's trajectory.
  λ > 0: nearby futures separate exponentially.

Score per state = p̂ · (1 − flip rate). The futures (every action's mean loss and share
acceptable, on the same draws) form the internal multiverse that M_M reuses: common
random numbers, so variants differ only by their decisions, never by their luck.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gd.motors.backend import Array, Backend
from gd.motors.condition import CompiledGene, fires
from gd.motors.domains.pack import DomainPack
from gd.motors.errors import MotorInputError

VERSION = "1"
Z_WILSON = 1.959963984540054
FLIP_SAMPLES = 32
FLIP_SCALE = 0.05          # perturbation of the state, in feature scales
DIVERGENCE_DELTA = 1e-3    # initial separation, in feature scales
DIVERGENCE_FUTURES = 64    # futures used for λ: a mean of logs settles fast
MAX_FUTURE_ELEMENTS = 50_000_000   # futures × states per batch: bounds memory (~400 MB)


@dataclass(frozen=True)
class MonteCarloPlan:
    """How many futures: start with `monte_carlo_n`, add batches until ≤ epsilon or cap."""

    monte_carlo_n: int = 256
    epsilon: float = 0.05
    cap: int = 4096

    def __post_init__(self) -> None:
        if not 1 <= self.monte_carlo_n <= self.cap:
            raise MotorInputError(f"monte_carlo_n must be in [1, cap={self.cap}]")
        if not 0.0 < self.epsilon < 1.0:
            raise MotorInputError("epsilon must be in (0, 1)")
        if self.cap > 1_000_000:
            raise MotorInputError("cap above 1,000,000 futures is refused")


@dataclass(frozen=True)
class Multiverse:
    """The sampled futures summarised per (state, action), shared with M_M."""

    loss_mean: np.ndarray       # (states, actions)
    acceptable: np.ndarray      # (states, actions) share of futures acceptable
    futures: int


@dataclass(frozen=True)
class ChaoticOutput:
    score: np.ndarray
    veto: np.ndarray
    p_hat: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    cvar: np.ndarray
    flip: np.ndarray
    divergence: np.ndarray
    futures: int
    multiverse: Multiverse


def wilson(k: np.ndarray, n: int, z: float = Z_WILSON) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for k successes out of n."""
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half


def chaotic(bk: Backend, pack: DomainPack, cg: CompiledGene, X: Array,
            rng: np.random.Generator, plan: MonteCarloPlan) -> ChaoticOutput:
    cfg = pack.config
    n = X.shape[0]
    m = len(pack.actions)
    if plan.monte_carlo_n * n > MAX_FUTURE_ELEMENTS:
        raise MotorInputError(
            f"{plan.monte_carlo_n} futures × {n} states exceeds {MAX_FUTURE_ELEMENTS}; "
            "evaluate fewer states per call")
    g = cg.action
    own_losses: list[np.ndarray] = []
    loss_sum = np.zeros((n, m))
    acc_sum = np.zeros((n, m))
    drawn = 0
    first_z = None
    while True:
        batch = min(plan.monte_carlo_n, plan.cap - drawn)
        z = bk.normal(rng, (batch, n, pack.noise_dims))
        if first_z is None:
            first_z = z[:DIVERGENCE_FUTURES]
        L = pack.losses(bk, X, z)                                   # (N, n, m)
        best = bk.min(L, axis=2)
        ok = bk.expand(best, 2) + cfg.tolerance >= L
        loss_sum += bk.to_numpy(bk.sum(L, axis=0))
        acc_sum += bk.to_numpy(bk.sum(bk.tofloat(ok), axis=0))
        own_losses.append(bk.to_numpy(L[:, :, g]))
        drawn += batch
        lo, hi = wilson(acc_sum[:, g], drawn)
        if float(np.max(hi - lo)) / 2.0 <= plan.epsilon or drawn >= plan.cap:
            break
    p_hat = acc_sum[:, g] / drawn
    losses = np.sort(np.concatenate(own_losses, axis=0), axis=0, kind="stable")
    tail = max(1, math.ceil((1.0 - cfg.cvar_alpha) * drawn))
    cvar = losses[-tail:].mean(axis=0) / cfg.loss_scale
    flip = _flip_rate(bk, pack, cg, X, rng)
    lyap = divergence(bk, pack, X, first_z, rng)
    veto = cvar > cfg.cvar_limit
    return ChaoticOutput(
        score=np.clip(p_hat * (1.0 - flip), 0.0, 1.0), veto=veto, p_hat=p_hat, lower=lo,
        upper=hi, cvar=cvar, flip=flip, divergence=lyap, futures=drawn,
        multiverse=Multiverse(loss_sum / drawn, acc_sum / drawn, drawn))


def _flip_rate(bk: Backend, pack: DomainPack, cg: CompiledGene, X: Array,
               rng: np.random.Generator) -> np.ndarray:
    return flip_rate_from(bk, cg, X, flip_noise(bk, pack, X, rng))


def flip_noise(bk: Backend, pack: DomainPack, X: Array, rng: np.random.Generator) -> Array:
    """The perturbations the flip rate uses (gene-independent: shared by a batch)."""
    n, f = X.shape
    return bk.normal(rng, (FLIP_SAMPLES, n, f)) * bk.asarray(pack.scale * FLIP_SCALE)


def flip_rate_from(bk: Backend, cg: CompiledGene, X: Array, noise: Array) -> np.ndarray:
    n = X.shape[0]
    base = fires(bk, cg, X)
    flipped = bk.zeros((n,))
    for i in range(FLIP_SAMPLES):
        flipped = flipped + bk.tofloat(fires(bk, cg, X + noise[i]) != base)
    return bk.to_numpy(flipped / FLIP_SAMPLES)


def divergence(bk: Backend, pack: DomainPack, X: Array, z: Array,
                rng: np.random.Generator) -> np.ndarray:
    n, f = X.shape
    direction = bk.normal(rng, (n, f)) * bk.asarray(pack.scale * DIVERGENCE_DELTA)
    a = pack.trajectory(bk, X, z)
    b = pack.trajectory(bk, X + direction, z)
    d = bk.abs(b - a)
    first, last = d[..., 0], d[..., -1]
    steps = max(1, a.shape[-1] - 1)
    moved = first > 0
    rate = bk.where(moved, (bk.log(bk.where(moved, last, 1.0) + 1e-300)
                            - bk.log(bk.where(moved, first, 1.0))) / steps, 0.0)
    return bk.to_numpy(bk.mean(rate, axis=0))
