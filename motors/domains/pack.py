"""DomainPack: what a domain brings to the motors.

A pack names its features (the columns of the state matrix, in order), our actions and
the counterpart's, and supplies the array models the motors need:

* `game(bk, X)` → payoff arrays `(A, B)` of shape (states, our actions, their actions)
  for M_N (bimatrix; a zero-sum game is `B = -A`);
* `losses(bk, X, z)` → loss of each of our actions in each sampled future, shape
  (futures, states, actions), from standard normal draws `z` of shape
  (futures, states, `noise_dims`): the transition/noise model of M_C and M_M;
* `trajectory(bk, X, z)` → one scalar per future step (futures, states, horizon), the
  quantity whose divergence M_C measures;
* demo data in the domain's published layout, a loader for the real files, demo genes.

Packs hold no state between calls; the same inputs give the same arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from gd.genome import StateVector
from gd.genome.gene import OPERATORS
from gd.motors.backend import Array, Backend
from gd.motors.errors import MotorInputError

MOTORS = ("M_P", "M_N", "M_C", "M_M")

# Framework defaults (DESIGN.md, "CP and verdict"): below 0.61 vetoed → adapt,
# 0.61–0.80 approved, 0.81 and above candidate for the genome.
DEFAULT_BANDS: tuple[tuple[float, str, str], ...] = (
    (0.0, "vetoed", "adapt"),
    (0.61, "approved", "approve"),
    (0.81, "candidate", "approve"),
)


@dataclass(frozen=True)
class DomainConfig:
    """Per-domain thresholds of the motors and of CP. Every field has a stated default
    reason in docs/motors.md; a node's config may override them per domain."""

    # M_P: veto when enough evidence puts the upper credible bound below `floor`.
    floor: float = 0.3
    min_evidence: float = 8.0
    # M_P: a state where the gene's graded applicability is below this does not apply.
    apply_min: float = 0.5
    # M_C: tail risk. CVaR at level `cvar_alpha` of loss / loss_scale above the limit vetoes.
    cvar_alpha: float = 0.95
    cvar_limit: float = 0.6
    loss_scale: float = 1.0
    # M_C: the decision is acceptable in a future when its loss is within `tolerance`
    # of the best action's loss in that future (hindsight regret).
    tolerance: float = 0.0
    horizon: int = 10
    # CP exponents per motor and bands.
    weights: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(MOTORS, 1.0))
    bands: tuple[tuple[float, str, str], ...] = DEFAULT_BANDS
    fitness: str = "motor_blend"

    def to_plain(self) -> dict[str, Any]:
        return {
            "apply_min": self.apply_min, "bands": [list(b) for b in self.bands],
            "cvar_alpha": self.cvar_alpha, "cvar_limit": self.cvar_limit,
            "fitness": self.fitness, "floor": self.floor, "horizon": self.horizon,
            "loss_scale": self.loss_scale, "min_evidence": self.min_evidence,
            "tolerance": self.tolerance, "weights": dict(self.weights),
        }

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> DomainConfig:
        """Inverse of `to_plain`; unknown keys or bad values raise MotorInputError."""
        if not isinstance(data, Mapping):
            raise MotorInputError("domain config must be a map")
        known = set(cls().to_plain())
        unknown = sorted(set(data) - known)
        if unknown:
            raise MotorInputError(f"unknown domain config key(s): {', '.join(unknown)}")
        plain = {**cls().to_plain(), **data}
        try:
            cfg = cls(
                floor=float(plain["floor"]), min_evidence=float(plain["min_evidence"]),
                apply_min=float(plain["apply_min"]), cvar_alpha=float(plain["cvar_alpha"]),
                cvar_limit=float(plain["cvar_limit"]), loss_scale=float(plain["loss_scale"]),
                tolerance=float(plain["tolerance"]), horizon=int(plain["horizon"]),
                weights={str(k): float(v) for k, v in dict(plain["weights"]).items()},
                bands=tuple((float(b[0]), str(b[1]), str(b[2])) for b in plain["bands"]),
                fitness=str(plain["fitness"]))
        except (TypeError, ValueError, IndexError) as exc:
            raise MotorInputError(f"bad domain config: {exc}") from None
        if not 0.0 < cfg.cvar_alpha < 1.0 or cfg.loss_scale <= 0 or cfg.horizon < 1:
            raise MotorInputError("domain config: need 0 < cvar_alpha < 1, loss_scale > 0, "
                                  "horizon ≥ 1")
        return cfg


@dataclass(frozen=True)
class HistoricalRecord:
    """A domain's past, labelled for back-testing: one row per observed state (the
    pack's feature matrix, with each row's entity and time) and, per action, whether
    taking that action in that state would have reached its purpose (`labels[action]`,
    bool per row). `rule` says in words how the labels were derived."""

    X: np.ndarray
    entities: tuple[str, ...]
    times: tuple[int, ...]
    labels: Mapping[str, np.ndarray]
    rule: str


class DomainPack:
    """Base class: subclasses set the class attributes and implement the models."""

    name: str = ""
    features: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    counter_actions: tuple[str, ...] = ()
    default_action: str = ""
    # Comparison operators a codon may use on this domain's features, and the types of
    # the gene parameters the pack reads (others are free-form notes); checked at import
    # and on receipt by `gd.motors.domains.gene_check`.
    operators: tuple[str, ...] = OPERATORS
    param_types: Mapping[str, tuple[type, ...]] = MappingProxyType({})
    noise_dims: int = 1
    # Typical value and spread of each feature: kNN distances and the softness of
    # graded applicability are measured in units of `scale`.
    center: np.ndarray = np.zeros(0)
    scale: np.ndarray = np.ones(0)
    config: DomainConfig = DomainConfig()
    # Features M_P compares states on (k nearest experiences). Empty: all. A pack leaves
    # out identifiers and columns that are noise for its outcomes (an engine's unit id).
    similarity: tuple[str, ...] = ()

    def similarity_mask(self) -> np.ndarray:
        """1.0 for each feature M_P's distance uses, 0.0 for the others."""
        if not self.similarity:
            return np.ones(len(self.features))
        return np.array([1.0 if f in self.similarity else 0.0 for f in self.features])

    # -- features and states -----------------------------------------------------
    def feature_index(self, name: str) -> int:
        return self._index("feature", self.features, name)

    def action_index(self, action: str) -> int:
        return self._index("action", self.actions, action)

    def _index(self, kind: str, names: tuple[str, ...], name: str) -> int:
        """`name`'s position among this domain's `names`; a MotorInputError naming the
        ones there are otherwise (a typo in a gene or a request, not a crash)."""
        try:
            return names.index(name)
        except ValueError:
            raise MotorInputError(
                f"{kind} {name!r} is not in domain {self.name!r} "
                f"({kind}s: {', '.join(names)})") from None

    def matrix(self, states: Sequence[StateVector]) -> np.ndarray:
        """States as a float64 matrix (states × features) in this domain's order."""
        if not states:
            raise MotorInputError("no states to evaluate")
        rows = []
        for i, state in enumerate(states):
            if not isinstance(state, StateVector):
                raise MotorInputError(f"states[{i}] is not a StateVector")
            if state.domain != self.name:
                raise MotorInputError(
                    f"states[{i}] is in domain {state.domain!r}, expected {self.name!r}")
            missing = [f for f in self.features if f not in state.values]
            if missing:
                raise MotorInputError(
                    f"states[{i}] lacks feature(s) {', '.join(missing[:5])}"
                    f"{' …' if len(missing) > 5 else ''} of domain {self.name!r}")
            rows.append([state.values[f] for f in self.features])
        return np.asarray(rows, dtype=np.float64)

    def check_matrix(self, X: Any) -> np.ndarray:
        """Validate a raw matrix: 2-D, one column per feature, all finite."""
        arr: np.ndarray = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise MotorInputError(f"states must be a non-empty 2-D matrix, got shape {arr.shape}")
        if arr.shape[1] != len(self.features):
            raise MotorInputError(
                f"states have {arr.shape[1]} features, domain {self.name!r} has "
                f"{len(self.features)} ({', '.join(self.features[:4])}, …)")
        bad = ~np.isfinite(arr)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise MotorInputError(
                f"state row {row} feature {self.features[col]!r} is not finite ({arr[row, col]})")
        return arr

    def states(self, X: np.ndarray, entities: Sequence[str] | None = None,
               times: Sequence[int] | None = None) -> list[StateVector]:
        X = self.check_matrix(X)
        return [
            StateVector(domain=self.name, values=dict(zip(self.features, map(float, row),
                                                          strict=True)),
                        entity=entities[i] if entities is not None else "",
                        t=int(times[i]) if times is not None else 0)
            for i, row in enumerate(X)
        ]

    # -- models (subclasses) -------------------------------------------------------
    def game(self, bk: Backend, X: Array) -> tuple[Array, Array]:
        raise MotorInputError(f"domain {self.name!r} defines no game")

    def losses(self, bk: Backend, X: Array, z: Array) -> Array:
        raise MotorInputError(f"domain {self.name!r} defines no transition model")

    def trajectory(self, bk: Backend, X: Array, z: Array) -> Array:
        raise MotorInputError(f"domain {self.name!r} defines no trajectory")

    # -- data ----------------------------------------------------------------------
    def demo_states(self, n: int, seed: int) -> list[StateVector]:
        raise MotorInputError(f"domain {self.name!r} has no demo data")

    def load(self, path: str | Path) -> list[StateVector]:
        raise MotorInputError(f"domain {self.name!r} has no loader")

    def demo_genes(self) -> list[dict[str, Any]]:
        return []

    def history(self, path: str | Path) -> HistoricalRecord:
        """The domain's historical record in `path`, labelled per action."""
        raise MotorInputError(f"domain {self.name!r} cannot back-test on history")


def demo_gene(domain: str, name: str, codons: list[tuple[str, str, float]], action: str,
              purpose: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One line of the JSONL gene import format."""
    return {
        "action": action,
        "codons": [{"feature": f, "op": op, "threshold": t} for f, op, t in codons],
        "domain": domain, "name": name, "params": dict(params or {}), "purpose": purpose,
    }
