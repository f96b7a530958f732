"""Where M_M's search keeps its per-generation checkpoints: a small protocol.

The motors are a computing core: they must not open a database (DESIGN.md; no lmdb,
trio or libp2p under motors/). A search still has to survive a crash or a Ctrl-C, so it
takes any `CheckpointStore`: three methods on opaque bytes under a search id. The node
implements it on its Cortex's LMDB `meristic` sub-database
(`gd.node.store.meristic_checkpoints.LmdbCheckpoints`); `MemoryCheckpoints` keeps them in a
dict (tests, benchmarks, a one-off search).

What the bytes mean stays here: `encode_checkpoint` / `decode_checkpoint` own the format,
its version and the size bound, so every store refuses the same corrupt or foreign
records the same way, and a store never needs to understand them.
"""

from __future__ import annotations

from typing import Any, Final, Protocol, runtime_checkable

import msgpack

from gd.genome import canonical
from gd.motors.errors import CheckpointError

CHECKPOINT_DB: Final = b"meristic"      # the sub-database name a node store uses
CHECKPOINT_FORMAT: Final = 1
# A checkpoint of 2M variants × 8 slots is ~ 100 MB; refuse to read anything bigger.
MAX_CHECKPOINT_BYTES: Final = 256 * 1024 * 1024


@runtime_checkable
class CheckpointStore(Protocol):
    """Durable bytes by search id. `save` must be atomic per call (a crash leaves the
    previous checkpoint or the new one, never half of one)."""

    def load(self, search_id: str) -> bytes | None:
        """The last bytes saved under `search_id`, or None."""
        ...

    def save(self, search_id: str, raw: bytes) -> None:
        """Replace what is saved under `search_id`."""
        ...

    def delete(self, search_id: str) -> None:
        """Forget `search_id` (no error if there is nothing)."""
        ...


class MemoryCheckpoints:
    """A `CheckpointStore` in a dict: survives a cancelled search in the same process,
    not a crash."""

    def __init__(self) -> None:
        self.saved: dict[str, bytes] = {}

    def load(self, search_id: str) -> bytes | None:
        return self.saved.get(search_id)

    def save(self, search_id: str, raw: bytes) -> None:
        self.saved[search_id] = bytes(raw)

    def delete(self, search_id: str) -> None:
        self.saved.pop(search_id, None)


def encode_checkpoint(state: dict[str, Any]) -> bytes:
    """The canonical bytes of a search state (stamped with CHECKPOINT_FORMAT)."""
    return canonical.encode({**state, "format": CHECKPOINT_FORMAT})


def decode_checkpoint(search_id: str, raw: bytes) -> dict[str, Any]:
    """A search state back from its bytes; CheckpointError if it is too big, corrupt or
    of another format (never a traceback from msgpack)."""
    if len(raw) > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"checkpoint {search_id} is {len(raw)} bytes")
    try:
        state = msgpack.unpackb(bytes(raw), raw=False, max_bin_len=MAX_CHECKPOINT_BYTES)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError) as exc:
        raise CheckpointError(f"checkpoint {search_id} is corrupt: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {search_id} has an unknown format")
    return state


def load_state(store: CheckpointStore, search_id: str) -> dict[str, Any] | None:
    """The decoded state saved under `search_id` in `store`, or None."""
    raw = store.load(search_id)
    return None if raw is None else decode_checkpoint(search_id, raw)
