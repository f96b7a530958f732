"""The optional sections of config.toml ([mesh], [sync]) as typed, frozen settings.

Every section used to arrive as a plain dict (`cfg.extra`) that each subsystem checked on
its own, when it started: a typo in [mesh] surfaced only once the daemon ran, and a
section nobody read was silently accepted. Here each section is a frozen dataclass whose
fields carry their check; `parse_section` refuses an unknown key by name and a bad value
with the key, what was expected and what was given, before anything starts:

    config.toml: [mesh] ping_interval_s: expected a number > 0, got "x"

This module imports only pure modules (the mesh planner and peer limits), so reading the
config costs a read-only CLI command nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from gd.node.net.mesh import MeshPolicy
from gd.node.net.peers import PeerLimits
from gd.protocol.sync_messages import MAX_BATCH_GENES
from gd.protocol.wire import MAX_FRAME_SIZE


class ConfigError(ValueError):
    """config.toml is missing, unreadable or holds an invalid value."""


# What a field accepts, as its `check` metadata. Each entry: (test, what the error says).
def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return type(v) is int


CHECKS: Final[dict[str, tuple[Any, str]]] = {
    "bool": (lambda v: type(v) is bool, "true or false"),
    "int": (_is_int, "an integer"),
    "int>=0": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "int>=1": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "number>0": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "number>=0": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "fraction": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "batch": (lambda v: _is_int(v) and 1 <= v <= MAX_BATCH_GENES,
              f"an integer in 1..{MAX_BATCH_GENES}"),
    "frame": (lambda v: _is_int(v) and 1 <= v <= MAX_FRAME_SIZE,
              f"an integer in 1..{MAX_FRAME_SIZE}"),
}


def _f(default: Any, check: str) -> Any:
    return field(default=default, metadata={"check": check})


def _show(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def check_fields(obj: Any, section: str) -> None:
    """Check every field of a settings dataclass against its `check`; coerce integers to
    floats in number fields (TOML writes `15` for 15.0). Raises ConfigError naming the key."""
    for f in dataclasses.fields(obj):
        test, expected = CHECKS[f.metadata["check"]]
        value = getattr(obj, f.name)
        if not test(value):
            raise ConfigError(f"[{section}] {f.name}: expected {expected}, got {_show(value)}")
        if f.metadata["check"].startswith(("number", "fraction")):
            object.__setattr__(obj, f.name, float(value))


@dataclass(frozen=True)
class SyncSettings:
    """[sync]: when and how the daemon syncs genes (docs/protocol.md §6)."""

    # false: no sync on connect, change or timer; only `gd-node sync now` (benchmarks).
    auto: bool = _f(True, "bool")
    compress: bool = _f(True, "bool")   # zstd per batch when the peer supports it
    interval_s: float = _f(30.0, "number>0")   # periodic pull from every peer
    debounce_s: float = _f(0.5, "number>0")    # wait after a local change before hinting
    repair_interval_s: float = _f(600.0, "number>0")   # periodic anti-entropy
    batch_genes: int = _f(MAX_BATCH_GENES, "batch")

    def __post_init__(self) -> None:
        check_fields(self, "sync")


_LIMITS = PeerLimits()
_POLICY = MeshPolicy(region="-")


@dataclass(frozen=True)
class MeshSettings:
    """[mesh]: the mesh planner's targets and backoff (MeshPolicy), what one peer may cost
    us (PeerLimits), the planner's jitter seed and the liveness/handshake timings."""

    target_region_peers: int = _f(_POLICY.target_region_peers, "int>=0")
    max_region_peers: int = _f(_POLICY.max_region_peers, "int>=0")
    target_bridges: int = _f(_POLICY.target_bridges, "int>=0")
    max_bridges: int = _f(_POLICY.max_bridges, "int>=0")
    backoff_base_s: float = _f(_POLICY.backoff_base_s, "number>0")
    backoff_max_s: float = _f(_POLICY.backoff_max_s, "number>0")
    backoff_jitter: float = _f(_POLICY.backoff_jitter, "fraction")
    ban_s: float = _f(_POLICY.ban_s, "number>=0")
    max_streams: int = _f(_LIMITS.max_streams, "int>=1")
    max_frame_size: int = _f(_LIMITS.max_frame_size, "frame")
    max_bytes_per_s: float = _f(_LIMITS.max_bytes_per_s, "number>0")
    burst_bytes: float = _f(_LIMITS.burst_bytes, "number>0")
    max_throttle_debt_s: float = _f(_LIMITS.max_throttle_debt_s, "number>=0")
    # Seed of the planner's backoff jitter (a testnet replays the same schedule).
    seed: int = _f(0, "int")
    # Our own liveness check: libp2p notices neither a frozen peer nor (when the other
    # host leaks its socket on close) a departed one. 15 s keeps idle traffic negligible.
    ping_interval_s: float = _f(15.0, "number>0")
    # A connection whose peer has not handshaken by then is closed (three handshake
    # timeouts leave room for the dialer's own dial and retry).
    handshake_deadline_s: float = _f(15.0, "number>0")

    def __post_init__(self) -> None:
        check_fields(self, "mesh")
        try:  # the cross-field rules (target <= max, ...) live with the classes
            self.policy("-")
        except ValueError as exc:
            raise ConfigError(f"[mesh] {exc}") from None

    def policy(self, region: str) -> MeshPolicy:
        """The planner's policy for our region."""
        names = {f.name for f in dataclasses.fields(MeshPolicy)} - {"region"}
        return MeshPolicy(region=region, **{n: getattr(self, n) for n in names})

    def limits(self) -> PeerLimits:
        """What one peer may cost us."""
        return PeerLimits(**{f.name: getattr(self, f.name)
                             for f in dataclasses.fields(PeerLimits)})


S = TypeVar("S")


def parse_section(cls: type[S], body: Any, section: str) -> S:
    """One [section] table as `cls`; ConfigError names an unknown key or a bad value."""
    if not isinstance(body, Mapping):
        raise ConfigError(f"[{section}] must be a table")
    known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in body:
        if key not in known:
            raise ConfigError(f"[{section}] {key}: unknown key (known: {', '.join(known)})")
    return cls(**body)
