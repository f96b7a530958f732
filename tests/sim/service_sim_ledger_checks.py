"""The invariants of the ledger service simulation (`service_sim_ledger`), against its
own model: the requests clients made and the receipts they were given, and one common
sequence of entry hashes built from what the nodes hold (never from the service's own
bookkeeping). The Merkle root is recomputed here from the leaf hashes (RFC 9162), so a
store whose tree and entries disagree is caught too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from gd.ledger.chain import AppendStatus
from gd.ledger.entry import LedgerEntry

if TYPE_CHECKING:
    from service_sim_ledger_gate import LedgerNode


@dataclass
class Request:
    """One client statement: unique payload and idempotency key, authored by one node."""

    number: int
    author: int
    kind: str
    payload: bytes
    key: str
    presigned: bool
    statement: LedgerEntry | None = None
    attempts: int = 0
    receipt: dict[str, Any] | None = None


def merkle_root(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 root of leaf hashes (the empty tree: SHA-256 of nothing)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + merkle_root(leaves[:split]) +
                          merkle_root(leaves[split:])).digest()


class LedgerInvariants:
    """The model and the checks; `LedgerNet` supplies nodes, `fail` and `log`."""

    nodes: list[LedgerNode]

    def __init__(self) -> None:
        self.requests: list[Request] = []
        # the one sequence every ledger must be a prefix of: (entry hash, leaf hash, entry)
        self.common: list[tuple[bytes, bytes, LedgerEntry]] = []
        self.checked: dict[int, int] = {}

    def fail(self, text: str) -> NoReturn:
        raise NotImplementedError

    def log(self, text: str) -> None:
        raise NotImplementedError

    def acknowledged(self, request: Request, plain: dict[str, Any]) -> None:
        """A client was told its statement committed: note the receipt (the same one on
        every retry, or the model's exactly-once check fires at the end)."""
        if plain["status"] == AppendStatus.CONFLICT.value:
            self.fail(f"request {request.number} got a conflict for its own statement")
        if request.receipt is not None and (
                request.receipt["index"], request.receipt["entry_hash"]) != (
                plain["index"], plain["entry_hash"]):
            self.fail(f"request {request.number} acknowledged twice at different places: "
                      f"{request.receipt['index']} and {plain['index']}")
        request.receipt = plain

    def check_prefix(self) -> None:
        """Every up node's ledger is a prefix of the common sequence (extending it)."""
        for node in self.nodes:
            if node.svc is None:
                continue
            ledger = self.ledger_of(node)
            size = ledger.size
            if size < self.checked.get(node.index, 0):
                self.fail(f"node {node.index}'s ledger shrank from "
                          f"{self.checked[node.index]} to {size} entries (a committed "
                          "apply was lost)")
            start = self.checked.get(node.index, 0)
            for entry in ledger.entries(start, size):
                index = entry.index
                if index < len(self.common):
                    if self.common[index][0] != entry.entry_hash:
                        self.fail(f"fork: node {node.index} holds another entry at index "
                                  f"{index}")
                elif index == len(self.common):
                    self.common.append((entry.entry_hash, entry.leaf_hash, entry))
                else:
                    self.fail(f"node {node.index} skipped index {len(self.common)}")
            self.checked[node.index] = size

    def ledger_of(self, node: LedgerNode) -> Any:
        """The node's ledger as the checks read it (the teeth tests hide entries)."""
        assert node.svc is not None
        return node.svc.ledger

    def converged(self) -> bool:
        sizes = {node.svc.ledger.size for node in self.nodes if node.svc is not None}
        return len(sizes) == 1 and sizes == {len(self.common)}

    def check_final(self) -> None:
        """After healing: convergence, chains, roots and heads, exactly-once, no stranger,
        no alarm, no error logged by a service."""
        self.check_prefix()
        if not self.converged():
            sizes = [n.svc.ledger.size if n.svc else None for n in self.nodes]
            self.fail(f"not converged within the settle bound: sizes {sizes}, "
                      f"common {len(self.common)}")
        waiting = [r.number for r in self.requests if r.receipt is None]
        if waiting:
            self.fail(f"requests never acknowledged after healing: {waiting[:10]}")
        self.check_entries()
        self.check_trees()
        for node in self.nodes:
            assert node.svc is not None and node.gate is not None
            if node.svc.alarms_raised:
                self.fail(f"node {node.index} raised a fork alarm")
            errors = [e for e in node.gate.log.events if e[0] == "error"]
            if errors:
                self.fail(f"node {node.index} logged an error: {errors[0]}")

    def check_entries(self) -> None:
        """Each request's payload is on the ledger exactly once, where its receipt says;
        every entry is some client's request, signed by its author."""
        by_payload = {r.payload: r for r in self.requests}
        seen: dict[bytes, int] = {}
        for index, (_, _, entry) in enumerate(self.common):
            request = by_payload.get(entry.payload_hash)
            if request is None:
                self.fail(f"index {index} holds a statement no client appended")
            if entry.payload_hash in seen:
                self.fail(f"request {request.number} is on the ledger twice: indices "
                          f"{seen[entry.payload_hash]} and {index}")
            seen[entry.payload_hash] = index
        for index, (_, _, entry) in enumerate(self.common):
            request = by_payload[entry.payload_hash]
            if entry.author != self.nodes[request.author].peer or \
                    str(entry.kind) != request.kind or entry.idempotency_key != request.key:
                self.fail(f"index {index} does not hold request {request.number} as asked")
        for request in self.requests:
            receipt = request.receipt
            assert receipt is not None
            index = receipt["index"]
            if request.payload not in seen:
                self.fail(f"request {request.number} was acknowledged (index {index}) "
                          "but is not on the ledger")
            if index != seen[request.payload] or \
                    self.common[index][0].hex() != receipt["entry_hash"]:
                self.fail(f"request {request.number}'s receipt names index {index}, the "
                          f"ledger holds it at {seen[request.payload]}")

    def check_trees(self) -> None:
        """Each node's chain verifies; its root and every signed head it stores match
        the root this model computes for that size."""
        leaves = [leaf for _, leaf, _ in self.common]
        voters = [n.peer for n in self.nodes]
        roots: dict[int, bytes] = {}

        def root_at(size: int) -> bytes:
            if size not in roots:
                roots[size] = merkle_root(leaves[:size])
            return roots[size]

        heads = 0
        for node in self.nodes:
            assert node.svc is not None
            ledger = node.svc.ledger
            report = ledger.verify(trusted_signers=voters)
            if not report.ok:
                self.fail(f"node {node.index}'s ledger does not verify at "
                          f"{report.first_bad_index}: {report.reason}")
            if ledger.root(ledger.size) != root_at(ledger.size):
                self.fail(f"node {node.index}'s Merkle root differs at size {ledger.size}")
            for head in ledger.heads():
                heads += 1
                if head.size > len(leaves) or head.root != root_at(head.size):
                    self.fail(f"node {node.index} holds a signed head of size {head.size} "
                              "that is not the common ledger's root")
        self.log(f"trees size={len(leaves)} heads={heads}")
