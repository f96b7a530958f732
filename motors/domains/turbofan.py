"""Turbofan predictive maintenance in the NASA C-MAPSS layout.

Features: `unit`, `cycle`, `setting1`–`setting3`, `s1`–`s21` (the 26 whitespace-separated
columns of `train_FD00x.txt` / `test_FD00x.txt`). Our actions: continue, inspect,
overhaul. The counterpart is nature: over the next `horizon` cycles the engine stays
stable, degrades, or fails.

Degradation model (after Saxena et al., "Damage Propagation Modeling for Aircraft Engine
Run-to-Failure Simulation", PHM 2008): wear grows exponentially,
`w(t) = d0 + K·(exp(b·t) − 1)`, so `dw/dt = b·(w − d0 + K)`; the engine fails when
`w ≥ 1`. Sensors move linearly with wear plus Gaussian noise. The baselines, spans (change
from new to failure) and noise levels below were measured on FD001 (first 20 cycles vs
last 5 of each unit); s9 and s14 are left out of the wear estimate because their drift
differs by unit in FD001. The wear estimate is sign-agnostic (see `TurbofanPack.wear`).
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from gd.genome import StateVector
from gd.motors.backend import Array, Backend
from gd.motors.domains.pack import DomainConfig, DomainPack, HistoricalRecord, demo_gene
from gd.motors.errors import MotorInputError

SENSORS = tuple(f"s{i}" for i in range(1, 22))
FEATURES = ("unit", "cycle", "setting1", "setting2", "setting3", *SENSORS)
CMAPSS_COLUMNS = len(FEATURES)  # 26

# Per column: new-engine value, change from new to failure, per-cycle noise (FD001).
_BASE = np.array([
    0.0, 0.0, 0.0, 0.0, 100.0, 518.67, 642.38, 1586.84, 1402.76, 14.62, 21.61, 553.95,
    2388.06, 9056.0, 1.3, 47.35, 521.91, 2388.06, 8137.37, 8.4183, 0.03, 392.26, 2388.0,
    100.0, 38.93, 23.36])
_SPAN = np.array([
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.29, 15.45, 26.17, 0.0, 0.0005, -2.456, 0.174, 41.99, 0.0,
    0.79, -2.10, 0.178, 29.49, 0.102, 0.0, 3.98, 0.0, 0.0, -0.487, -0.290])
_NOISE = np.array([
    0.0, 0.0, 0.0022, 0.0003, 0.0, 0.0, 0.294, 3.92, 3.87, 0.0, 0.0013, 0.396, 0.031,
    4.12, 0.0, 0.099, 0.296, 0.029, 3.04, 0.0196, 0.0, 0.91, 0.0, 0.0, 0.098, 0.060])
# Sensors whose trend is the same in every unit (the wear estimate's inputs).
_WEAR_SENSORS = ("s2", "s3", "s4", "s7", "s8", "s11", "s12", "s13", "s15", "s17", "s20",
                 "s21")

# Costs, in units of one unplanned failure (loss_scale 100).
COST_FAILURE = 100.0        # unplanned in-service failure
COST_INSPECT = 5.0          # borescope inspection
COST_REPAIR = 20.0          # planned repair after an inspection finds the fault
COST_OVERHAUL = 40.0        # shop visit, resets wear
COST_DEFERRED = 10.0        # running on while degrading: a costlier repair later
COST_DEFERRED_INSPECTED = 3.0
P_DETECT = 0.95             # a borescope inspection finds an impending HPC failure
Z_DETECT = 1.6448536269514722  # Φ⁻¹(0.95): detected when the draw is below it
HORIZON = 30                # cycles looked ahead
RATE_MEAN = 0.025           # exponential wear rate b (FD001 lives of 128–362 cycles)
RATE_SPREAD = 0.3           # log-normal spread of b between engines
WEAR_SIGMA = 0.1            # std of the wear estimate (FD001: 0.12–0.2 incl. unit spread)
WEAR_FLOOR = 0.01           # growth offset −d0 + K, so a new engine still wears
DEGRADED = 0.7              # wear from which the engine counts as degrading


def _wear_weights() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(projection to per-sensor wear, inverse-variance weights, noise² in wear units)."""
    idx = np.array([FEATURES.index(s) for s in _WEAR_SENSORS])
    rel = _NOISE[idx] / np.abs(_SPAN[idx])           # noise in units of wear
    w = 1.0 / rel**2
    project = np.zeros((CMAPSS_COLUMNS, len(idx)))
    project[idx, np.arange(len(idx))] = 1.0 / _SPAN[idx]
    return project, w / w.sum(), rel**2


WEAR_PROJECT, WEAR_WEIGHTS, WEAR_NOISE2 = _wear_weights()
WEAR_OFFSET = _BASE @ WEAR_PROJECT


class TurbofanPack(DomainPack):
    name = "turbofan"
    features = FEATURES
    actions = ("continue", "inspect", "overhaul")
    # `lead_cycles`: how many cycles ahead the action is planned (demo gene inspect-hot-hpc).
    param_types = MappingProxyType({"lead_cycles": (int,)})
    counter_actions = ("stable", "degrading", "failing")
    default_action = "continue"
    noise_dims = 3   # wear-estimate error, wear rate, inspection detection
    center = _BASE.copy()
    # M_P compares engines on the sensors that trend with wear in every unit: the unit id
    # is a label, the cycle count misleads across lives of 128–362 cycles, and settings
    # and the flat or unit-specific sensors add only noise to the distance.
    similarity = _WEAR_SENSORS
    scale = np.maximum(np.abs(_SPAN) / 4.0, np.maximum(_NOISE, 1e-3))
    scale[0], scale[1] = 25.0, 50.0   # unit id, cycle
    # Veto when the worst 10 % of futures cost on average more than 0.8 of a failure. At
    # 5 % the inspection's own miss rate (1 − P_DETECT) would fill the whole tail.
    # M_P's floor is the break-even of the cheapest shop action: an inspection (5) that
    # may avert a failure (100) pays while its success chance is above 5/100; the
    # evidence vetoes only when even that is ruled out (ADR 0012).
    config = DomainConfig(floor=COST_INSPECT / COST_FAILURE, min_evidence=8.0,
                          cvar_alpha=0.9, cvar_limit=0.8, loss_scale=COST_FAILURE,
                          tolerance=COST_INSPECT / 2, horizon=HORIZON)

    def wear(self, bk: Backend, X: Array) -> Array:
        """Wear estimate (0 new, 1 failure) from one cycle's sensors: how far the wear
        sensors have moved from new, whichever way, in units of their FD001 span.

        Each sensor gives z = (x − new) / span (1 at an HPC failure); the estimate is
        √(Σ w·(z² − σ²)) with inverse-variance weights w and each sensor's noise σ² in
        wear units removed. A signed average (Σ w·z) would read an engine whose fault
        moves some sensors the other way (fan degradation in FD003) as newer than new."""
        z = bk.matmul(X, bk.asarray(WEAR_PROJECT)) - bk.asarray(WEAR_OFFSET)
        energy = bk.matmul(z * z - bk.asarray(WEAR_NOISE2), bk.asarray(WEAR_WEIGHTS))
        return bk.sqrt(bk.maximum(energy, 0.0))

    def _outcome_probs(self, bk: Backend, w: Array) -> Array:
        # Wear at the horizon is linear in the estimate error at the mean rate:
        # w_H = w + (w + WEAR_FLOOR)(G − 1), G = exp(b̄ H). Φ(x) ≈ σ(1.702 x).
        g = float(np.exp(RATE_MEAN * HORIZON))
        mean = w * g + WEAR_FLOOR * (g - 1.0)
        sd = WEAR_SIGMA * g
        p_fail = bk.sigmoid(1.702 * (mean - 1.0) / sd)
        p_deg = bk.sigmoid(1.702 * (mean - DEGRADED) / sd)
        return bk.stack([1.0 - p_deg, p_deg - p_fail, p_fail], axis=-1)

    def _loss_table(self) -> np.ndarray:
        fail_inspected = COST_INSPECT + P_DETECT * COST_REPAIR + (1 - P_DETECT) * COST_FAILURE
        return np.array([
            [0.0, COST_DEFERRED, COST_FAILURE],
            [COST_INSPECT, COST_INSPECT + COST_DEFERRED_INSPECTED, fail_inspected],
            [COST_OVERHAUL, COST_OVERHAUL, COST_OVERHAUL],
        ])

    def game(self, bk: Backend, X: Array) -> tuple[Array, Array]:
        """Our payoff is −expected loss; nature's is the log-likelihood of its outcome
        plus the harm it does us (a plausible adversary, not an omnipotent one)."""
        n = X.shape[0]
        loss = bk.asarray(self._loss_table())                     # (3, 3)
        probs = self._outcome_probs(bk, self.wear(bk, X))           # (n, 3)
        A = bk.zeros((n, 3, 3)) - loss
        B = bk.expand(bk.log(probs + 1e-6), 1) + loss / COST_FAILURE
        return A, B

    def _future_wear(self, bk: Backend, X: Array, z: Array) -> tuple[Array, Array]:
        w0 = self.wear(bk, X) + WEAR_SIGMA * z[..., 0]               # (N, n)
        rate = RATE_MEAN * bk.exp(RATE_SPREAD * z[..., 1])
        return w0, rate

    def losses(self, bk: Backend, X: Array, z: Array) -> Array:
        w0, rate = self._future_wear(bk, X, z)
        wh = w0 + bk.maximum(w0 + WEAR_FLOOR, 0.0) * (bk.exp(rate * HORIZON) - 1.0)
        fail = bk.tofloat(wh >= 1.0)
        deg = bk.tofloat(wh >= DEGRADED) - fail
        detected = bk.tofloat(z[..., 2] < Z_DETECT)
        cont = COST_FAILURE * fail + COST_DEFERRED * deg
        insp = (COST_INSPECT + COST_DEFERRED_INSPECTED * deg
                + fail * (detected * COST_REPAIR + (1.0 - detected) * COST_FAILURE))
        over = bk.zeros(tuple(wh.shape)) + COST_OVERHAUL
        return bk.stack([cont, insp, over], axis=-1)

    def trajectory(self, bk: Backend, X: Array, z: Array) -> Array:
        w0, rate = self._future_wear(bk, X, z)
        steps = bk.asarray(np.arange(1, HORIZON + 1, dtype=np.float64))
        growth = bk.exp(bk.expand(rate, -1) * steps) - 1.0            # (N, n, H)
        return bk.expand(w0, -1) + bk.expand(bk.maximum(w0 + WEAR_FLOOR, 0.0), -1) * growth

    # -- data ----------------------------------------------------------------------
    def demo_states(self, n: int, seed: int) -> list[StateVector]:
        rows, _ = demo_cmapss(units=max(1, n // 150 + 1), seed=seed)
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(rows), size=min(n, len(rows)), replace=False))
        sel = rows[pick]
        return self.states(sel, entities=[str(int(u)) for u in sel[:, 0]],
                           times=[int(c) for c in sel[:, 1]])

    def load(self, path: str | Path) -> list[StateVector]:
        rows = load_cmapss(path)
        return self.states(rows, entities=[str(int(u)) for u in rows[:, 0]],
                           times=[int(c) for c in rows[:, 1]])

    def history(self, path: str | Path) -> HistoricalRecord:
        """A run-to-failure file (`train_FD00x.txt`): every unit's last cycle is its
        failure, so each row's RUL is known. Within HORIZON cycles of failure, inspecting
        or overhauling reaches its purpose and continuing does not; earlier, continuing
        is right and a shop visit is premature."""
        rows = load_cmapss(path)
        return cmapss_record(rows, rul_for_train(rows))

    def demo_genes(self) -> list[dict[str, Any]]:
        d = self.name
        return [
            demo_gene(d, "inspect-hot-hpc", [("s11", ">", 47.8)], "inspect",
                      "catch HPC degradation before failure", {"lead_cycles": 30}),
            demo_gene(d, "overhaul-late-life", [("s11", ">", 48.1), ("s4", ">", 1425.0)],
                      "overhaul", "avoid in-service failure of worn engines"),
            demo_gene(d, "continue-healthy", [("s11", "<", 47.6)], "continue",
                      "no needless shop visits for healthy engines"),
            demo_gene(d, "inspect-low-s12", [("s12", "<", 520.6)], "inspect",
                      "static pressure drop signals compressor wear"),
        ]


def demo_cmapss(units: int, seed: int, truncate: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
    """Run-to-failure trajectories in the C-MAPSS layout, and each row's true RUL.

    With `truncate`, each unit is cut at a random point before failure, as in the test
    files. Same seed, same rows.
    """
    if units < 1:
        raise MotorInputError("units must be at least 1")
    rng = np.random.default_rng(seed)
    out, rul = [], []
    for unit in range(1, units + 1):
        life = int(rng.integers(128, 363))
        b = RATE_MEAN * float(np.exp(RATE_SPREAD * rng.standard_normal()))
        d0 = float(rng.uniform(0.0, 0.05))
        t = np.arange(1, life + 1, dtype=np.float64)
        wear = d0 + (1.0 - d0) * np.expm1(b * t) / np.expm1(b * life)
        rows = _BASE + np.outer(wear, _SPAN) + rng.standard_normal((life, CMAPSS_COLUMNS)) * _NOISE
        rows[:, 0], rows[:, 1] = unit, t
        keep = life if not truncate else int(rng.integers(max(1, life // 4), life))
        out.append(rows[:keep])
        rul.append(life - t[:keep])
    return np.round(np.concatenate(out), 4), np.concatenate(rul)


def cmapss_record(rows: np.ndarray, rul: np.ndarray) -> HistoricalRecord:
    """C-MAPSS rows with their true RUL as a labelled record (see `TurbofanPack.history`)."""
    near = rul <= HORIZON
    return HistoricalRecord(
        X=rows, entities=tuple(str(int(u)) for u in rows[:, 0]),
        times=tuple(int(c) for c in rows[:, 1]),
        labels={"continue": ~near, "inspect": near, "overhaul": near},
        rule=f"RUL ≤ {HORIZON} cycles: inspect/overhaul succeed, continue fails; "
             "otherwise the reverse")


def load_cmapss(path: str | Path) -> np.ndarray:
    """Read a C-MAPSS `train_FD00x.txt` / `test_FD00x.txt`: whitespace-separated, 26
    columns, trailing spaces. Clear errors on a wrong column count or bad number."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise MotorInputError(f"cannot read {path}: {exc.strerror}") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != CMAPSS_COLUMNS:
            raise MotorInputError(
                f"{path}:{lineno}: {len(parts)} columns, C-MAPSS has {CMAPSS_COLUMNS}")
        try:
            rows.append([float(p) for p in parts])
        except ValueError:
            raise MotorInputError(f"{path}:{lineno}: not a number in {line.strip()!r}") from None
    if not rows:
        raise MotorInputError(f"{path}: no rows")
    X = np.asarray(rows)
    if not np.isfinite(X).all():
        raise MotorInputError(f"{path}: non-finite value")
    return X


def rul_for_train(rows: np.ndarray) -> np.ndarray:
    """Remaining useful life of every row of a run-to-failure (train) file."""
    units = rows[:, 0]
    last = {u: rows[units == u, 1].max() for u in np.unique(units)}
    return np.array([last[u] - c for u, c in zip(units, rows[:, 1], strict=True)])


def rul_for_test(rows: np.ndarray, rul_path: str | Path) -> np.ndarray:
    """Remaining useful life of every row of a test file, from its `RUL_FD00x.txt`."""
    end = load_rul(rul_path)
    units = rows[:, 0].astype(int)
    if units.max() > len(end):
        raise MotorInputError(f"{rul_path}: {len(end)} units, the test file has {units.max()}")
    last = {u: rows[units == u, 1].max() for u in np.unique(units)}
    return np.array([end[u - 1] + last[u] - c for u, c in zip(units, rows[:, 1], strict=True)])


def load_rul(path: str | Path) -> np.ndarray:
    try:
        values = [float(x) for x in Path(path).read_text().split()]
    except (OSError, ValueError) as exc:
        raise MotorInputError(f"cannot read RUL file {path}: {exc}") from None
    return np.asarray(values)
