"""How node values become JSON: one `default` for `json.dumps`, shared by the CLI's
`--json` output and the HTTP API, so a script sees the same shapes through both doors."""

from __future__ import annotations

from typing import Any


def json_default(value: Any) -> Any:
    """Bytes as hex, sets and tuples as lists, mappings (MappingProxyType) as dicts."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "items"):
        return dict(value.items())
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
