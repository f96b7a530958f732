"""M_N, Nash: is the action stable against the other side's best reply?

The domain pack turns each state into a bimatrix game: A[i, j] our payoff and B[i, j]
the counterpart's when we play i and they play j (zero-sum: B = −A).

Equilibria:
* small games (both sides ≤ EXACT_MAX_ACTIONS): support enumeration, batched over
  states: for every pair of equal-size supports (I, J), solve the indifference
  equations for all states at once and keep, per state, the first pair (by size, then
  lexicographic order) whose solution is a probability vector with no profitable
  deviation outside the support. That is exact for non-degenerate games;
* larger games, and states where enumeration finds nothing (degenerate games): regret
  matching, batched, for REGRET_ITERATIONS rounds; the time-averaged strategies are an
  ε-equilibrium in zero-sum games and a coarse correlated equilibrium in general.

Score of our action g against the counterpart's equilibrium strategy y:
  u = A·y,  score = 1 − (max_i u_i − u_g) / (max A − min A)
so the best reply scores 1 and the regret is measured in units of the game's payoff
range (1 when all payoffs are equal). Veto when g is strictly dominated by a pure action
(some i with A[i, j] > A[g, j] for every j).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from gd.motors.backend import Array, Backend
from gd.motors.errors import MotorInputError

VERSION = "1"
EXACT_MAX_ACTIONS = 5       # support enumeration cost grows as C(m, s)·C(k, s)
REGRET_ITERATIONS = 2000    # regret matching rounds for large games
TOL = 1e-9                  # feasibility tolerance of probabilities and best replies


@dataclass(frozen=True)
class Equilibrium:
    x: Array        # (states, ours)
    y: Array        # (states, theirs)
    exact: Array    # (states,) bool: found by support enumeration


def _check(A: Array, B: Array) -> None:
    if A.ndim != 3 or tuple(A.shape) != tuple(B.shape):
        raise MotorInputError(f"payoffs must be (states, ours, theirs) arrays of one shape, "
                              f"got {tuple(A.shape)} and {tuple(B.shape)}")


def support_enumeration(bk: Backend, A: Array, B: Array) -> Equilibrium:
    _check(A, B)
    n, m, k = A.shape
    x_out, y_out = bk.zeros((n, m)), bk.zeros((n, k))
    found = bk.bool_full((n,), False)
    for s in range(1, min(m, k) + 1):
        for rows in combinations(range(m), s):
            for cols in combinations(range(k), s):
                x, y, ok = _solve_support(bk, A, B, rows, cols)
                new = ok & ~found
                x_out = bk.where(bk.expand(new, 1), x, x_out)
                y_out = bk.where(bk.expand(new, 1), y, y_out)
                found = found | ok
    return Equilibrium(x_out, y_out, found)


def _solve_support(bk: Backend, A: Array, B: Array, rows: tuple[int, ...],
                   cols: tuple[int, ...]) -> tuple[Array, Array, Array]:
    n, m, k = A.shape
    s = len(rows)
    ri, ci = bk.asint(list(rows)), bk.asint(list(cols))
    sub_a = bk.take(bk.take(A, ri, axis=1), ci, axis=2)          # (n, s, s)
    sub_b = bk.take(bk.take(B, ri, axis=1), ci, axis=2)
    # y on cols makes us indifferent over rows: sub_a y = v 1, Σ y = 1.
    # x on rows makes them indifferent over cols: sub_bᵀ x = u 1, Σ x = 1.
    rhs = bk.asarray(np.r_[np.zeros(s), 1.0])
    border = np.zeros((s + 1, s + 1))
    border[:s, s] = -1.0
    border[s, :s] = 1.0
    pad = bk.asarray(border)

    def system(sub: Array) -> Array:
        top = bk.concat([sub, bk.zeros((n, s, 1))], axis=2)
        return bk.concat([top, bk.zeros((n, 1, s + 1))], axis=1) + pad

    sol_y = bk.solve(system(sub_a), bk.zeros((n, s + 1)) + rhs)
    sol_x = bk.solve(system(bk.stack([sub_b[:, :, j] for j in range(s)], axis=1)),
                     bk.zeros((n, s + 1)) + rhs)
    ys, v = sol_y[:, :s], sol_y[:, s]
    xs, u = sol_x[:, :s], sol_x[:, s]
    x = bk.zeros((n, m))
    y = bk.zeros((n, k))
    x_cols = [xs[:, rows.index(i)] if i in rows else x[:, i] for i in range(m)]
    y_cols = [ys[:, cols.index(j)] if j in cols else y[:, j] for j in range(k)]
    x, y = bk.stack(x_cols, axis=1), bk.stack(y_cols, axis=1)
    finite = bk.all(bk.isfinite(sol_x), axis=1) & bk.all(bk.isfinite(sol_y), axis=1)
    x = bk.where(bk.expand(finite, 1), x, 0.0)
    y = bk.where(bk.expand(finite, 1), y, 0.0)
    v = bk.where(finite, v, 0.0)
    u = bk.where(finite, u, 0.0)
    ours = bk.matmul(A, bk.expand(y, 2))[..., 0]                # (n, m)
    theirs = bk.matmul(bk.expand(x, 1), B)[:, 0, :]             # (n, k)
    ok = (finite & bk.all(x >= -TOL, axis=1) & bk.all(y >= -TOL, axis=1)
          & bk.all(ours <= bk.expand(v, 1) + TOL, axis=1)
          & bk.all(theirs <= bk.expand(u, 1) + TOL, axis=1))
    return bk.clip(x, 0.0, 1.0), bk.clip(y, 0.0, 1.0), ok


def regret_matching(bk: Backend, A: Array, B: Array,
                    iterations: int = REGRET_ITERATIONS) -> Equilibrium:
    """Batched regret matching (Hart & Mas-Colell 2000); average strategies."""
    _check(A, B)
    n, m, k = A.shape
    r1, r2 = bk.zeros((n, m)), bk.zeros((n, k))
    s1, s2 = bk.zeros((n, m)), bk.zeros((n, k))
    for _ in range(iterations):
        x, y = _strategy(bk, r1), _strategy(bk, r2)
        u1 = bk.matmul(A, bk.expand(y, 2))[..., 0]
        u2 = bk.matmul(bk.expand(x, 1), B)[:, 0, :]
        r1 = r1 + u1 - bk.expand(bk.sum(x * u1, axis=1), 1)
        r2 = r2 + u2 - bk.expand(bk.sum(y * u2, axis=1), 1)
        s1, s2 = s1 + x, s2 + y
    return Equilibrium(s1 / iterations, s2 / iterations, bk.bool_full((n,), False))


def _strategy(bk: Backend, regret: Array) -> Array:
    pos = bk.maximum(regret, 0.0)
    total = bk.expand(bk.sum(pos, axis=1), 1)
    uniform = 1.0 / regret.shape[1]
    return bk.where(total > 0, pos / bk.where(total > 0, total, 1.0), uniform)


def equilibrium(bk: Backend, A: Array, B: Array) -> Equilibrium:
    """Exact where the game is small and non-degenerate, regret matching elsewhere."""
    _check(A, B)
    _, m, k = A.shape
    if m > EXACT_MAX_ACTIONS or k > EXACT_MAX_ACTIONS:
        return regret_matching(bk, A, B)
    eq = support_enumeration(bk, A, B)
    if bool(bk.to_numpy(bk.all(eq.exact))):
        return eq
    rm = regret_matching(bk, A, B)
    keep = bk.expand(eq.exact, 1)
    return Equilibrium(bk.where(keep, eq.x, rm.x), bk.where(keep, eq.y, rm.y), eq.exact)


def action_scores(bk: Backend, A: Array, y: Array) -> Array:
    """Score of every one of our actions against the counterpart's strategy: (states, ours)."""
    u = bk.matmul(A, bk.expand(y, 2))[..., 0]
    span = bk.max(bk.max(A, axis=2), axis=1) - bk.min(bk.min(A, axis=2), axis=1)
    regret = bk.expand(bk.max(u, axis=1), 1) - u
    safe = bk.where(span > 0, span, 1.0)
    return bk.clip(1.0 - regret / bk.expand(safe, 1), 0.0, 1.0)


def dominated(bk: Backend, A: Array) -> Array:
    """(states, ours) bool: action strictly dominated by some other pure action."""
    _, m, _ = A.shape
    cols = []
    for g in range(m):
        beaten = bk.bool_full((A.shape[0],), False)
        for i in range(m):
            if i != g:
                beaten = beaten | bk.all(A[:, i, :] > A[:, g, :], axis=1)
        cols.append(beaten)
    return bk.stack(cols, axis=1)


@dataclass(frozen=True)
class NashOutput:
    score: np.ndarray          # (states,) for the gene's action
    veto: np.ndarray
    scores_all: np.ndarray     # (states, ours), reused by M_M
    dominated_all: np.ndarray
    x: np.ndarray
    y: np.ndarray
    exact: np.ndarray


def nash(bk: Backend, A: Array, B: Array, action: int) -> NashOutput:
    eq = equilibrium(bk, A, B)
    scores = action_scores(bk, A, eq.y)
    dom = dominated(bk, A)
    n = bk.to_numpy
    s_all, d_all = n(scores), n(dom)
    return NashOutput(score=s_all[:, action], veto=d_all[:, action], scores_all=s_all,
                      dominated_all=d_all, x=n(eq.x), y=n(eq.y), exact=n(eq.exact))
