"""The `[domains.<name>]` tables of config.toml: one parser for every key they may hold.

Two subsystems read these tables: sync (`conflict`, what to do with concurrent edits
from peers) and the motors (bands, weights and thresholds of that domain's
`DomainConfig`). Each used to check the table on its own, so a motor key was refused by
sync while `evaluate` silently ignored it. Here every key is known in one place: a key
that is neither a sync key nor a motor setting is an error naming it, and every value is
checked before the daemon starts or the CLI evaluates anything.

```toml
[domains.turbofan]
conflict = "merge"
bands = [[0.0, "vetoed", "adapt"], [0.55, "approved", "approve"], [0.8, "candidate", "approve"]]
weights = { M_P = 1.0, M_N = 0.5, M_C = 1.0, M_M = 1.0 }
floor = 0.25
min_evidence = 12.0
```
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from gd.crdt.conflict import QUEUE_ALL, ConflictPolicy
from gd.motors.errors import MotorInputError
from gd.node.config_sections import ConfigError

if TYPE_CHECKING:  # config.py imports this module (lazily) to parse [domains]
    from gd.motors.domains.pack import DomainConfig
    from gd.node.config import NodeConfig

CONFLICT_MODES: Final = ("queue", "lww", "merge")
# Motor settings a node may override per domain. `loss_scale`, `horizon` and `fitness`
# belong to the pack's model (its loss units, its look-ahead), not to a node's taste.
MOTOR_KEYS: Final = ("apply_min", "bands", "cvar_alpha", "cvar_limit", "floor",
                     "min_evidence", "tolerance", "weights")
BAND_VERDICTS: Final = ("adapt", "approve")


@dataclass(frozen=True)
class DomainSettings:
    """One `[domains.<name>]` table, checked: the conflict mode and the motor overrides."""

    conflict: str = "queue"
    motors: Mapping[str, Any] = field(default_factory=dict)

    def motor_config(self, domain: str) -> DomainConfig:
        """The pack's DomainConfig with this table's overrides applied."""
        # The motors (and numpy) load here, only for a node that overrides a motor
        # setting: sync reads this module at start for `conflict` (ADR 0063).
        from gd.motors.domains import get_domain
        from gd.motors.domains.pack import DomainConfig

        base = get_domain(domain).config.to_plain()
        return DomainConfig.from_plain({**base, **self.motors})


def _check_motor_value(where: str, key: str, value: Any) -> Any:
    from gd.motors.craft import check_bands  # with the motors, as above (ADR 0063)
    from gd.motors.domains.pack import MOTORS

    if key == "weights":
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}.weights must be a table of motor = exponent")
        unknown = sorted(set(value) - set(MOTORS))
        if unknown:
            raise ConfigError(f"{where}.weights: unknown motor(s) {unknown}; motors are "
                              f"{', '.join(MOTORS)}")
        out = {}
        for motor, w in value.items():
            if isinstance(w, bool) or not isinstance(w, int | float) or not 0 <= w <= 10:
                raise ConfigError(f"{where}.weights.{motor} must be a number in [0, 10]")
            out[str(motor)] = float(w)
        return {**dict.fromkeys(MOTORS, 1.0), **out}
    if key == "bands":
        if not isinstance(value, list) or not all(
                isinstance(b, list) and len(b) == 3 for b in value):
            raise ConfigError(f"{where}.bands must be a list of [lower CP, band, verdict]")
        bands = []
        for low, name, verdict in value:
            if isinstance(low, bool) or not isinstance(low, int | float) or not 0 <= low <= 1:
                raise ConfigError(f"{where}.bands: lower bound {low!r} is not in [0, 1]")
            if not isinstance(name, str) or not name or verdict not in BAND_VERDICTS:
                raise ConfigError(f"{where}.bands: each band needs a name and a verdict in "
                                  f"{BAND_VERDICTS}, got {[low, name, verdict]!r}")
            bands.append([float(low), name, verdict])
        try:
            check_bands(bands)
        except MotorInputError as exc:
            raise ConfigError(f"{where}.bands: {exc}") from None
        return bands
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}.{key} must be a number, got {value!r}")
    limits = {"apply_min": (0, 1), "cvar_alpha": (0, 1), "floor": (0, 1),
              "cvar_limit": (0, 1e9), "min_evidence": (0, 1e9), "tolerance": (0, 1e9)}
    lo, hi = limits[key]
    if not lo <= value <= hi:
        raise ConfigError(f"{where}.{key} must be in [{lo}, {hi:g}], got {value}")
    return float(value)


def parse_domain_settings(domains: Mapping[str, Any]) -> dict[str, DomainSettings]:
    """Every `[domains.<name>]` table, checked; raises ConfigError naming the bad key."""
    if not isinstance(domains, Mapping):
        raise ConfigError("[domains] must be a table of [domains.<name>] tables")
    out: dict[str, DomainSettings] = {}
    for name, table in domains.items():
        where = f"[domains.{name}]"
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where} must be a table")
        unknown = sorted(set(table) - {"conflict", *MOTOR_KEYS})
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown} (known: conflict, "
                              f"{', '.join(MOTOR_KEYS)})")
        mode = table.get("conflict", "queue")
        if mode not in CONFLICT_MODES:
            raise ConfigError(f"{where}.conflict must be one of {CONFLICT_MODES}")
        motors = {k: _check_motor_value(where, k, v) for k, v in table.items()
                  if k != "conflict"}
        settings = DomainSettings(conflict=mode, motors=motors)
        if motors:
            try:
                settings.motor_config(str(name))
            except MotorInputError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        out[str(name)] = settings
    return out


def domain_config(cfg: NodeConfig, domain: str) -> DomainConfig | None:
    """The motors' config for `domain` on this node: the pack's, with the node's
    `[domains.<domain>]` overrides; None when the node overrides nothing (the pack's)."""
    settings = cfg.domains.get(domain)
    if settings is None or not settings.motors:
        return None
    return settings.motor_config(domain)


def conflict_policies(domains: Mapping[str, DomainSettings]) -> Callable[[str], ConflictPolicy]:
    """The checked `conflict = "queue" | "lww" | "merge"` settings as the
    `policy_for(domain)` that SyncStore takes. Default: queue (a person decides)."""
    policies = {name: ConflictPolicy(merge=t.conflict == "merge", lww=t.conflict == "lww")
                for name, t in domains.items()}
    return lambda domain: policies.get(domain, QUEUE_ALL)
