"""RFC 9162 Merkle trees: hashing, an incremental tree, inclusion and consistency proofs.

Hashing is the Certificate Transparency scheme (RFC 9162 §2.1.1, unchanged from RFC 6962):
a leaf is ``SHA-256(0x00 || data)`` and an interior node ``SHA-256(0x01 || left || right)``.
The distinct prefixes stop a leaf from being passed off as an interior node (second
preimage). The tree of ``n`` leaves splits at ``k``, the largest power of two below ``n``,
so the left subtree is always perfect and the tree of any size is fixed by its leaves.

`MerkleTree` is incremental: every *perfect* subtree (2^level leaves starting at a
multiple of 2^level) is hashed once, when its last leaf arrives, and written to a
`NodeStore`. An append therefore costs O(1) amortised hashes (O(log n) worst case), the
root of any past size is the fold of at most log2(n) stored nodes, and a proof reads
O(log n) stored nodes (the right edge of a tree that is not perfect costs O(log^2 n) in the
worst case, still no rebuild). The store is a protocol so the same tree runs over Python
lists (tests, benchmarks) or an LMDB sub-database (`gd.node.store.ledger_store`).

The verification functions follow RFC 9162 §2.1.3.2 and §2.1.4.2 step by step; they work
from the proof alone and never touch a store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gd.ledger.errors import LocalLedgerError, ProofError, RemoteLedgerError

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
# RFC 9162 §2.1.1: the hash of an empty tree is the hash of the empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()
# A tree holds at most 2^64 - 1 leaves (sizes are uint64 on the wire, as in RFC 9162), so
# an audit path has at most 64 hashes and a consistency path at most 65. A proof longer
# than this is refused before any hashing: it cannot be honest.
MAX_TREE_SIZE = 2**64 - 1
MAX_PROOF_HASHES = 65


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 §2.1.1 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split_point(n: int) -> int:
    """k, the largest power of two strictly below n (n >= 2): where the tree of n splits."""
    return 1 << ((n - 1).bit_length() - 1)


class NodeStore(Protocol):
    """Where a `MerkleTree` keeps its perfect subtree hashes.

    ``(level, index)`` names the perfect subtree over leaves
    ``[index * 2^level, (index + 1) * 2^level)``; level 0 holds the leaf hashes.
    Nodes are written once and never change (the log is append-only).
    """

    def get_node(self, level: int, index: int) -> bytes: ...

    def put_node(self, level: int, index: int, value: bytes) -> None: ...


class MemoryNodeStore:
    """A `NodeStore` over one Python list per level (tests, benchmarks, proof serving)."""

    def __init__(self) -> None:
        self.levels: list[list[bytes]] = []

    def get_node(self, level: int, index: int) -> bytes:
        try:
            return self.levels[level][index]
        except IndexError:
            raise LocalLedgerError(f"no Merkle node at level {level}, index {index}") from None

    def put_node(self, level: int, index: int, value: bytes) -> None:
        while len(self.levels) <= level:
            self.levels.append([])
        row = self.levels[level]
        if index != len(row):
            raise LocalLedgerError(
                f"Merkle node ({level}, {index}) written out of order; level has {len(row)}")
        row.append(value)


class Frontier:
    """The compact right edge of a tree: the roots of its perfect subtrees, left to right.

    Enough to append and to compute the root, in O(log n) memory; `ledger verify` streams
    every entry through one of these to recompute the root without storing the tree.
    """

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []

    def push(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; return the perfect nodes it completed as (level, index, hash)."""
        completed = [(0, self.size, leaf)]
        level, value = 0, leaf
        while self._stack and self._stack[-1][0] == level:
            _, left = self._stack.pop()
            value = node_hash(left, value)
            level += 1
            completed.append((level, self.size >> level, value))
        self._stack.append((level, value))
        self.size += 1
        return completed

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        value = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            value = node_hash(left, value)
        return value


def root_of_leaves(leaves: Iterable[bytes]) -> bytes:
    """MTH over already-hashed leaves, in one pass and O(log n) memory."""
    frontier = Frontier()
    for leaf in leaves:
        frontier.push(leaf)
    return frontier.root()


class MerkleTree:
    """An append-only RFC 9162 tree over a `NodeStore`; see the module docstring."""

    def __init__(self, store: NodeStore, size: int = 0) -> None:
        if size < 0:
            raise LocalLedgerError(f"tree size {size} is negative")
        self.store = store
        self.size = size

    def append(self, leaf: bytes) -> int:
        """Add one leaf *hash*; return its index. Writes the perfect nodes it completes."""
        if len(leaf) != HASH_SIZE:
            raise LocalLedgerError(f"a leaf hash is {HASH_SIZE} bytes, got {len(leaf)}")
        index = self.size
        self.store.put_node(0, index, leaf)
        level, position, value = 0, index, leaf
        while position & 1:
            value = node_hash(self.store.get_node(level, position - 1), value)
            level += 1
            position >>= 1
            self.store.put_node(level, position, value)
        self.size = index + 1
        return index

    def append_data(self, data: bytes) -> int:
        """Hash `data` as a leaf and append it."""
        return self.append(leaf_hash(data))

    def leaf(self, index: int) -> bytes:
        self._check_index(index, self.size)
        return self.store.get_node(0, index)

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first `size` leaves (default: all). Any past size is answerable."""
        size = self._resolve_size(size)
        return self.subtree_root(0, size) if size else EMPTY_ROOT

    def subtree_root(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for ``start < end <= size``, from stored perfect nodes."""
        count = end - start
        if count <= 0 or end > self.size:
            raise LocalLedgerError(f"no subtree [{start}, {end}) in a tree of {self.size}")
        if count & (count - 1) == 0 and start % count == 0:
            return self.store.get_node(count.bit_length() - 1, start // count)
        k = split_point(count)
        return node_hash(self.subtree_root(start, start + k), self.subtree_root(start + k, end))

    def inclusion_proof(self, index: int, size: int | None = None) -> InclusionProof:
        """RFC 9162 §2.1.3.1 PATH(index, D[0:size]): the audit path, leaf-side first."""
        size = self._resolve_size(size)
        self._check_index(index, size)
        path: list[bytes] = []
        start, end, m = 0, size, index
        while end - start > 1:
            k = split_point(end - start)
            if m < k:
                path.append(self.subtree_root(start + k, end))
                end = start + k
            else:
                path.append(self.subtree_root(start, start + k))
                start += k
                m -= k
        path.reverse()
        return InclusionProof(index=index, size=size, path=tuple(path))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        """RFC 9162 §2.1.4.1 PROOF(old_size, D[0:new_size]).

        Empty when ``old_size`` is 0 (every tree extends the empty one) or equals
        ``new_size`` (the roots must then be equal): the RFC defines only
        ``0 < old < new``, and those two edge cases need no hashes.
        """
        new_size = self._resolve_size(new_size)
        if not 0 <= old_size <= new_size:
            raise LocalLedgerError(f"no consistency proof from size {old_size} to {new_size}")
        if old_size in (0, new_size):
            return ConsistencyProof(old_size=old_size, new_size=new_size, path=())
        path: list[bytes] = []
        start, end, m, complete = 0, new_size, old_size, True
        while m != end - start:
            k = split_point(end - start)
            if m <= k:
                path.append(self.subtree_root(start + k, end))
                end = start + k
            else:
                path.append(self.subtree_root(start, start + k))
                start += k
                m -= k
                complete = False
        if not complete:
            path.append(self.subtree_root(start, end))
        path.reverse()
        return ConsistencyProof(old_size=old_size, new_size=new_size, path=tuple(path))

    def _resolve_size(self, size: int | None) -> int:
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise LocalLedgerError(f"tree size {size} is outside [0, {self.size}]")
        return size

    @staticmethod
    def _check_index(index: int, size: int) -> None:
        if not 0 <= index < size:
            raise LocalLedgerError(f"leaf index {index} is outside a tree of size {size}")


def _lsb(value: int) -> int:
    return value & 1


def root_from_inclusion_proof(
        leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2 steps 1-4: the root that `path` implies for `leaf` at `index`.

    Raises ProofError when the path has the wrong length for (index, size).
    """
    _check_hashes([leaf], "leaf hash")
    _check_hashes(path, "audit path hash")
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    return _fold_path(index, size - 1, leaf, path, "audit path", track_left=False)[1]


def verify_inclusion(
        leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 §2.1.3.2: raise ProofError unless `leaf` is at `index` of the tree `root`."""
    _check_hashes([root], "root hash")
    if root_from_inclusion_proof(leaf, index, size, path) != root:
        raise ProofError(f"audit path for leaf {index} of {size} does not reach the root")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       path: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2: raise ProofError unless tree `new_root` extends tree `old_root`.

    Edge cases the RFC leaves open, decided as `MerkleTree.consistency_proof` produces
    them: ``old_size == 0`` needs an empty path and the empty root; ``old_size ==
    new_size`` needs an empty path and equal roots.
    """
    _check_hashes([old_root, new_root], "root hash")
    _check_hashes(path, "consistency path hash")
    if not 0 <= old_size <= new_size:
        raise ProofError(f"size {new_size} cannot extend size {old_size}")
    if old_size == 0 or old_size == new_size:
        if path:
            raise ProofError("a consistency proof for these sizes must be empty")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise ProofError("the root of an empty tree is not the empty hash")
        if old_size == new_size and old_root != new_root:
            raise ProofError(f"two trees of size {old_size} have different roots")
        return
    # Step 1.
    if not path:
        raise ProofError("consistency path is empty")
    hashes = list(path)
    # Step 2: a perfect old tree is a node of the new one; its root opens the path.
    if old_size & (old_size - 1) == 0:
        hashes.insert(0, old_root)
    # Steps 3-4.
    fn, sn = old_size - 1, new_size - 1
    while _lsb(fn):
        fn >>= 1
        sn >>= 1
    # Steps 5-7.
    fr, sr = _fold_path(fn, sn, hashes[0], hashes[1:], "consistency path", track_left=True)
    if fr != old_root:
        raise ProofError(f"consistency path does not reach the root of size {old_size}")
    if sr != new_root:
        raise ProofError(f"consistency path does not reach the root of size {new_size}")


def _fold_path(fn: int, sn: int, seed: bytes, path: Sequence[bytes], what: str, *,
               track_left: bool) -> tuple[bytes, bytes]:
    """The walk up a path that RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency)
    share: from `seed` at node `fn` of last node `sn`, combine each hash of `path` on the
    side the position says. Returns (fr, sr): `sr` combines every hash (the new root, or
    the root an audit path implies); `fr` only those to the left (the old root of a
    consistency proof, computed only when `track_left`). ProofError when the path does
    not have the length the tree's depth asks for."""
    fr = sr = seed
    for c in path:
        if sn == 0:
            raise ProofError(f"{what} is longer than the tree is deep")
        if _lsb(fn) or fn == sn:
            if track_left:
                fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not _lsb(fn):
                while not _lsb(fn) and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"{what} is shorter than the tree is deep")
    return fr, sr


def _check_hashes(values: Sequence[bytes], what: str) -> None:
    if len(values) > MAX_PROOF_HASHES:
        raise ProofError(f"{len(values)} hashes exceed the limit of {MAX_PROOF_HASHES}")
    for value in values:
        if not isinstance(value, bytes) or len(value) != HASH_SIZE:
            raise ProofError(f"{what} is not {HASH_SIZE} bytes")


@dataclass(frozen=True)
class InclusionProof:
    """An audit path: "leaf `index` is in the tree of `size` leaves"."""

    index: int
    size: int
    path: tuple[bytes, ...]

    def root_for(self, leaf: bytes) -> bytes:
        return root_from_inclusion_proof(leaf, self.index, self.size, self.path)

    def verify(self, leaf: bytes, root: bytes) -> None:
        verify_inclusion(leaf, self.index, self.size, self.path, root)

    def to_plain(self) -> dict[str, Any]:
        return {"index": self.index, "path": list(self.path), "size": self.size}

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "path": [h.hex() for h in self.path], "size": self.size}

    @classmethod
    def from_plain(cls, data: Any) -> InclusionProof:
        data = _require_fields(data, "inclusion proof", {"index", "path", "size"})
        size = _size(data["size"], "size")
        return cls(index=_size(data["index"], "index"), size=size,
                   path=_hash_list(data["path"], hexed=False))

    @classmethod
    def from_json(cls, data: Any) -> InclusionProof:
        data = _require_fields(data, "inclusion proof", {"index", "path", "size"})
        return cls(index=_size(data["index"], "index"), size=_size(data["size"], "size"),
                   path=_hash_list(data["path"], hexed=True))


@dataclass(frozen=True)
class ConsistencyProof:
    """"The tree of `new_size` leaves extends the tree of `old_size` leaves"."""

    old_size: int
    new_size: int
    path: tuple[bytes, ...]

    def verify(self, old_root: bytes, new_root: bytes) -> None:
        verify_consistency(self.old_size, self.new_size, old_root, new_root, self.path)

    def to_plain(self) -> dict[str, Any]:
        return {"new_size": self.new_size, "old_size": self.old_size, "path": list(self.path)}

    def to_json(self) -> dict[str, Any]:
        return {"new_size": self.new_size, "old_size": self.old_size,
                "path": [h.hex() for h in self.path]}

    @classmethod
    def from_plain(cls, data: Any) -> ConsistencyProof:
        data = _require_fields(data, "consistency proof", {"new_size", "old_size", "path"})
        return cls(old_size=_size(data["old_size"], "old_size"),
                   new_size=_size(data["new_size"], "new_size"),
                   path=_hash_list(data["path"], hexed=False))

    @classmethod
    def from_json(cls, data: Any) -> ConsistencyProof:
        data = _require_fields(data, "consistency proof", {"new_size", "old_size", "path"})
        return cls(old_size=_size(data["old_size"], "old_size"),
                   new_size=_size(data["new_size"], "new_size"),
                   path=_hash_list(data["path"], hexed=True))


def _require_fields(data: Any, what: str, fields: set[str]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise RemoteLedgerError(f"{what}: expected a map, got {type(data).__name__}")
    missing = sorted(fields - set(data))
    unknown = sorted(set(data) - fields, key=str)
    if missing or unknown:
        raise RemoteLedgerError(f"{what}: missing {missing}, unknown {unknown}")
    return data


def _size(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TREE_SIZE:
        raise RemoteLedgerError(f"{field}: expected an integer in [0, 2^64-1], got {value!r}")
    return value


def _hash_list(value: Any, *, hexed: bool) -> tuple[bytes, ...]:
    if not isinstance(value, list | tuple):
        raise RemoteLedgerError(f"path: expected a list, got {type(value).__name__}")
    if len(value) > MAX_PROOF_HASHES:
        raise RemoteLedgerError(f"path: {len(value)} hashes exceed {MAX_PROOF_HASHES}")
    out = []
    for item in value:
        if hexed:
            if not isinstance(item, str):
                raise RemoteLedgerError("path: expected hex strings")
            try:
                item = bytes.fromhex(item)
            except ValueError:
                raise RemoteLedgerError("path: a hash is not hex") from None
        if not isinstance(item, bytes) or len(item) != HASH_SIZE:
            raise RemoteLedgerError(f"path: every hash is {HASH_SIZE} bytes")
        out.append(item)
    return tuple(out)
