"""Field validators shared by the records. Each raises `ValidationError(field, why)`."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from gd.genome.errors import ValidationError

# Limits on record fields. They bound what one hostile or mistaken record can cost us
# (memory, index key size: LMDB keys are at most 511 bytes) and are generous for a
# human-written decision rule.
MAX_ID_LEN = 128
MAX_NAME_LEN = 200
MAX_PURPOSE_LEN = 2000
MAX_TEXT_LEN = 1024
MAX_CODONS = 64
MAX_TERMS = 16
MAX_PARAMS = 64
MAX_FEATURES = 4096
MAX_VV_ENTRIES = 256
MAX_PARENTS = 16
MAX_U64 = 2**64 - 1

SLUG_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
FEATURE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

ParamValue = str | int | float | bool
# Built once: `list | tuple` written inside a check builds a new union on every call, and
# these checks run several times per gene created or received (issue 15).
_LIST_OR_TUPLE = (list, tuple)


def slug(field: str, value: Any) -> str:
    if not isinstance(value, str) or not SLUG_RE.match(value):
        raise ValidationError(field, f"{value!r} must match {SLUG_RE.pattern}")
    return value


def ident(field: str, value: Any) -> str:
    if not isinstance(value, str) or not ID_RE.match(value):
        raise ValidationError(field, f"{value!r} must match {ID_RE.pattern}")
    return value


def feature(field: str, value: Any) -> str:
    if not isinstance(value, str) or not FEATURE_RE.match(value):
        raise ValidationError(field, f"{value!r} is not a feature name ({FEATURE_RE.pattern})")
    return value


def text(field: str, value: Any, max_len: int = MAX_TEXT_LEN, *, required: bool = False) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, f"expected text, got {type(value).__name__}")
    if required and not value.strip():
        raise ValidationError(field, "must not be empty")
    if len(value) > max_len:
        raise ValidationError(field, f"is {len(value)} characters, the limit is {max_len}")
    if _CONTROL_RE.search(value):
        raise ValidationError(field, "contains control characters")
    return value


def finite(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(field, f"expected a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValidationError(field, f"{value!r} is not a finite number")
    return out


def uint(field: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"expected an integer, got {value!r}")
    if value < minimum or value > MAX_U64:
        raise ValidationError(field, f"{value} is outside [{minimum}, 2^64-1]")
    return value


def boolean(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(field, f"expected true or false, got {value!r}")
    return value


def digest(field: str, value: Any, size: int = 32) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise ValidationError(field, f"expected {size} bytes")
    return value


def params(field: str, value: Any) -> dict[str, ParamValue]:
    if type(value) is not dict and not isinstance(value, Mapping):
        raise ValidationError(field, f"expected a map, got {type(value).__name__}")
    if len(value) > MAX_PARAMS:
        raise ValidationError(field, f"has {len(value)} entries, the limit is {MAX_PARAMS}")
    out: dict[str, ParamValue] = {}
    for key in sorted(value):
        feature(f"{field}.{key}", key)
        item = value[key]
        if isinstance(item, bool):
            out[key] = item
        elif isinstance(item, int):
            out[key] = uint(f"{field}.{key}", item) if item >= 0 else _small_int(field, key, item)
        elif isinstance(item, float):
            out[key] = finite(f"{field}.{key}", item)
        elif isinstance(item, str):
            out[key] = text(f"{field}.{key}", item)
        else:
            raise ValidationError(f"{field}.{key}", f"unsupported value {item!r}")
    return out


def _small_int(field: str, key: str, item: int) -> int:
    if item < -(2**63):
        raise ValidationError(f"{field}.{key}", "integer out of range")
    return item


def nonempty_tuple(field: str, value: Any, max_len: int) -> tuple[Any, ...]:
    if not isinstance(value, _LIST_OR_TUPLE):
        raise ValidationError(field, f"expected a list, got {type(value).__name__}")
    if not value:
        raise ValidationError(field, "must not be empty")
    if len(value) > max_len:
        raise ValidationError(field, f"has {len(value)} items, the limit is {max_len}")
    return tuple(value)


def require_map(field: str, value: Any) -> Mapping[str, Any]:
    # A plain dict first: the ABC's isinstance is several times slower.
    if type(value) is not dict and not isinstance(value, Mapping):
        raise ValidationError(field, f"expected a map, got {type(value).__name__}")
    return value


def exact_keys(field: str, value: Mapping[str, Any], fields: set[str] | frozenset[str]
               ) -> None:
    """A record must carry every one of `fields` and nothing else (strict decoding)."""
    missing = sorted(set(fields) - set(value))
    if missing:
        raise ValidationError(field, f"missing field(s) {', '.join(missing)}")
    known_keys(field, value, set(fields))


def known_keys(field: str, value: Mapping[str, Any], allowed: set[str]) -> None:
    """Refuse unknown fields: a typo in an import file must not be silently dropped."""
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ValidationError(field, f"unknown field(s) {', '.join(map(str, unknown))}")
