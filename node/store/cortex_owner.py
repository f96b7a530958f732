"""Which node a Cortex belongs to, and backups that keep to it.

A Cortex is not neutral data: its native genes are what *this* node authored, its
agreements are what *this* node agreed. Restoring another node's backup on top of a
home used to make that home list the other node's genes as native and its agreements
as effective, while signing with its own key. So each Cortex records its owner (the
peer id of the node key it was made for) in its ``meta`` table, and `restore` refuses a
backup whose owner is another key unless the caller says `from_other_node` on purpose;
then the restored Cortex is re-stamped with our key and remembers whom it came from.

The stamp is written by `gd-node init`, by every writable local open and daemon start
of a home that lacks one (homes made before the stamp existed), and into each backup.
It is a statement by whoever writes the disk, not a signature: it guards against
mistakes and against restoring someone else's file by accident, not against a local
attacker who can write the Cortex anyway (docs/security.md).
"""

from __future__ import annotations

from pathlib import Path

from gd.genome.identity import is_peer_id
from gd.node.store.cortex import Cortex, CortexError
from gd.node.store.cortex import restore as restore_copy

OWNER_KEY = b"owner"
ADOPTED_FROM_KEY = b"adopted_from"


class ForeignCortexError(CortexError):
    """A backup of another node's Cortex (or of unknown origin) was offered to restore."""


def owner_of(cortex: Cortex) -> str | None:
    """The peer id this Cortex was made for, or None when it was never stamped."""
    with cortex.env.begin() as txn:
        raw = txn.get(OWNER_KEY, db=cortex.open_db("meta"))
    return bytes(raw).decode() if raw is not None else None


def adopted_from(cortex: Cortex) -> str | None:
    """The owner a `from_other_node` restore took this Cortex from, if any."""
    with cortex.env.begin() as txn:
        raw = txn.get(ADOPTED_FROM_KEY, db=cortex.open_db("meta"))
    return bytes(raw).decode() if raw is not None else None


def stamp_owner(cortex: Cortex, peer_id: str, *, adopted: str | None = None) -> None:
    """Record `peer_id` as the owner (and, after an explicit takeover, the old owner)."""
    if not is_peer_id(peer_id):
        raise ValueError(f"{peer_id!r} is not a peer id")
    meta = cortex.open_db("meta")
    with cortex.env.begin(write=True) as txn:
        txn.put(OWNER_KEY, peer_id.encode(), db=meta)
        if adopted is not None:
            txn.put(ADOPTED_FROM_KEY, adopted.encode(), db=meta)


def claim_if_unstamped(cortex: Cortex, peer_id: str) -> str:
    """Stamp a writable Cortex that has no owner yet with `peer_id`; return the owner."""
    current = owner_of(cortex)
    if current is None and not cortex.readonly:
        stamp_owner(cortex, peer_id)
        return peer_id
    return current or ""


def backup(cortex: Cortex, dest: Path, owner: str) -> Path:
    """A private, compacting copy of `cortex` in the empty directory `dest`, stamped with
    its owner (the source's stamp, else `owner`: the home's key that made the backup)."""
    cortex.backup(dest)
    source_owner = owner_of(cortex)
    with Cortex.open(dest, create=False) as copy:
        stamp_owner(copy, source_owner or owner)
    return dest


def restore(source: Path, target: Path, *, owner: str,
            from_other_node: bool = False) -> tuple[Path, str | None]:
    """Replace the Cortex at `target` with the backup at `source` (see module docstring).

    Returns (where the previous Cortex was kept, the backup's owner when it was another
    node's). ForeignCortexError, before anything changes, when the backup belongs to
    another key or to nobody known, unless `from_other_node`.
    """
    with Cortex.open(source, readonly=True) as backup_cortex:
        theirs = owner_of(backup_cortex)
    if theirs != owner and not from_other_node:
        who = f"node {theirs}" if theirs else "an unknown node (it records no owner)"
        raise ForeignCortexError(
            f"the backup in {source} belongs to {who}, not to this node ({owner}). Restoring "
            "it would list that node's genes as this node's native genes and its agreements "
            "as this node's effective agreements, under this node's key. Pass "
            "--from-other-node only if you mean to take that data over.")
    aside = restore_copy(source, target)
    if theirs != owner:
        with Cortex.open(target, create=False) as restored:
            stamp_owner(restored, owner, adopted=theirs or "unknown")
    return aside, theirs if theirs != owner else None
