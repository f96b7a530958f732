"""Records stored under their content address: canonical bytes out, the same record back.

Why one base: a decision and an experience are each stored by `id`, the hash of their
canonical bytes, so recording the same one twice is idempotent. The encode / decode / id
trio was written out in both; two copies of how an id is computed could drift apart and
split one record into two.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import cached_property
from typing import Any, Final, Self

from gd.genome import canonical

# Bytes of the SHA-256 kept in an id: 128 bits, no collision among any store's records.
ID_BYTES: Final = 16


class ContentRecord(ABC):
    """Base of a frozen dataclass that says what its canonical form is (`to_plain`,
    `from_plain`): adds `encode`, `decode` and the content address `id`."""

    @abstractmethod
    def to_plain(self) -> dict[str, Any]:
        """The record as plain data (canonical msgpack encodes exactly this)."""

    @classmethod
    @abstractmethod
    def from_plain(cls, data: Any) -> Self:
        """The record from plain data, validated (a ValidationError says what is wrong)."""

    def encode(self) -> bytes:
        return canonical.encode(self.to_plain())

    @classmethod
    def decode(cls, raw: bytes) -> Self:
        return cls.from_plain(canonical.decode(raw))

    @cached_property
    def id(self) -> str:
        """The content address: the first `ID_BYTES` of the canonical bytes' SHA-256."""
        return canonical.sha256(self.encode())[:ID_BYTES].hex()
