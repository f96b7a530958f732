"""The incremental Merkle tree against a literal transcription of RFC 9162 §2.1."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gd.ledger.errors import LocalLedgerError, ProofError, RemoteLedgerError
from gd.ledger.merkle import (
    EMPTY_ROOT,
    ConsistencyProof,
    Frontier,
    InclusionProof,
    MemoryNodeStore,
    MerkleTree,
    leaf_hash,
    root_of_leaves,
    verify_consistency,
    verify_inclusion,
)

EXHAUSTIVE = 64


# -- the RFC's definitions, written as recursively as the RFC states them ---------------

def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


def data(n: int) -> list[bytes]:
    return [f"entry-{i}".encode() for i in range(n)]


def tree_of(d: list[bytes]) -> MerkleTree:
    tree = MerkleTree(MemoryNodeStore())
    for item in d:
        tree.append_data(item)
    return tree


@pytest.fixture(scope="module")
def big() -> tuple[list[bytes], MerkleTree]:
    d = data(EXHAUSTIVE)
    return d, tree_of(d)


# -- known answers -----------------------------------------------------------------------

def test_certificate_transparency_test_vector() -> None:
    # The eight-leaf tree of the certificate-transparency reference tests.
    d = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
         bytes(range(0x50, 0x58)), bytes(range(0x60, 0x70))]
    assert tree_of(d).root().hex() == (
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
    assert leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    assert MerkleTree(MemoryNodeStore()).root() == EMPTY_ROOT == ref_mth([])


# -- exhaustive agreement below 64 -------------------------------------------------------

@pytest.mark.parametrize("n", range(EXHAUSTIVE))
def test_root_of_every_size_matches_rfc(n: int, big: tuple[list[bytes], MerkleTree]) -> None:
    d, tree = big
    expected = ref_mth(d[:n])
    assert tree.root(n) == expected            # a past size of a larger tree
    assert tree_of(d[:n]).root() == expected   # a tree built to exactly n
    assert root_of_leaves(leaf_hash(x) for x in d[:n]) == expected


@pytest.mark.parametrize("n", range(1, EXHAUSTIVE))
def test_every_inclusion_proof_matches_rfc_and_verifies(
        n: int, big: tuple[list[bytes], MerkleTree]) -> None:
    d, tree = big
    root = ref_mth(d[:n])
    for m in range(n):
        proof = tree.inclusion_proof(m, n)
        assert list(proof.path) == ref_path(m, d[:n])
        assert len(proof.path) <= (n - 1).bit_length()  # at most ceil(log2 n) hashes
        verify_inclusion(leaf_hash(d[m]), m, n, proof.path, root)


@pytest.mark.parametrize("n", range(EXHAUSTIVE))
def test_every_consistency_proof_matches_rfc_and_verifies(
        n: int, big: tuple[list[bytes], MerkleTree]) -> None:
    d, tree = big
    for m in range(n + 1):
        proof = tree.consistency_proof(m, n)
        expected = ref_proof(m, d[:n]) if 0 < m < n else []
        assert list(proof.path) == expected
        verify_consistency(m, n, ref_mth(d[:m]), ref_mth(d[:n]), proof.path)


# -- random sizes beyond -----------------------------------------------------------------

def test_random_large_sizes_match_rfc() -> None:
    rng = random.Random(9162)
    sizes = [64, 65, 127, 128, 129, 255, 256, 257, 1000, 1023, 1024, 1025]
    sizes += [rng.randrange(65, 3000) for _ in range(6)]
    d = data(max(sizes))
    tree = tree_of(d)
    for n in sizes:
        root = ref_mth(d[:n])
        assert tree.root(n) == root
        for m in [*rng.sample(range(n), 6), 0, n - 1]:
            proof = tree.inclusion_proof(m, n)
            assert list(proof.path) == ref_path(m, d[:n])
            proof.verify(leaf_hash(d[m]), root)
        for m in rng.sample(range(1, n), 6):
            proof = tree.consistency_proof(m, n)
            assert list(proof.path) == ref_proof(m, d[:n])
            proof.verify(ref_mth(d[:m]), root)


def test_frontier_reports_each_completed_perfect_subtree() -> None:
    frontier, store = Frontier(), MemoryNodeStore()
    tree = MerkleTree(store)
    for item in data(37):
        completed = frontier.push(leaf_hash(item))
        tree.append_data(item)
        for level, index, value in completed:
            assert store.get_node(level, index) == value
    assert frontier.root() == tree.root() == ref_mth(data(37))


# -- proofs fail for a wrong leaf, index, size or root -----------------------------------

def test_inclusion_proof_fails_for_wrong_leaf_index_size_or_root(
        big: tuple[list[bytes], MerkleTree]) -> None:
    d, tree = big
    for n in (2, 3, 5, 8, 13, 32, 63):
        root = tree.root(n)
        for m in range(n):
            proof = tree.inclusion_proof(m, n)
            leaf = leaf_hash(d[m])
            with pytest.raises(ProofError):
                verify_inclusion(leaf_hash(d[m] + b"x"), m, n, proof.path, root)
            for other in range(n):
                if other != m:
                    with pytest.raises(ProofError):
                        verify_inclusion(leaf, other, n, proof.path, root)
            # A path's shape can fit several sizes, so a size is only meaningful with the
            # root signed for it: the path must not reach the real root of another size.
            for size in range(1, EXHAUSTIVE):
                if size != n:
                    with pytest.raises(ProofError):
                        verify_inclusion(leaf, m, size, proof.path, tree.root(size))
            with pytest.raises(ProofError):
                verify_inclusion(leaf, m, n, proof.path, tree.root(n - 1))
            with pytest.raises(ProofError):
                verify_inclusion(leaf, m, n, (*proof.path, root), root)
            if proof.path:
                with pytest.raises(ProofError):
                    verify_inclusion(leaf, m, n, proof.path[:-1], root)


def test_consistency_proof_fails_for_wrong_sizes_or_roots(
        big: tuple[list[bytes], MerkleTree]) -> None:
    _, tree = big
    for n in (2, 3, 7, 8, 9, 31, 63):
        for m in range(1, n):
            proof = tree.consistency_proof(m, n)
            old, new = tree.root(m), tree.root(n)
            # As for audit paths, a claimed size comes with the root signed for it.
            for size in range(1, EXHAUSTIVE):
                if size != m:
                    with pytest.raises(ProofError):
                        verify_consistency(size, n, tree.root(size), new, proof.path)
                if size != n:
                    with pytest.raises(ProofError):
                        verify_consistency(m, size, old, tree.root(size), proof.path)
            with pytest.raises(ProofError):
                verify_consistency(m, n, tree.root(m - 1), new, proof.path)
            with pytest.raises(ProofError):
                verify_consistency(m, n, old, tree.root(n - 1), proof.path)
            with pytest.raises(ProofError):
                verify_consistency(m, n, old, new, ())


def test_consistency_edge_cases() -> None:
    tree = tree_of(data(5))
    verify_consistency(5, 5, tree.root(), tree.root(), ())
    verify_consistency(0, 5, EMPTY_ROOT, tree.root(), ())
    with pytest.raises(ProofError):
        verify_consistency(5, 5, tree.root(), tree.root(4), ())
    with pytest.raises(ProofError):
        verify_consistency(0, 5, tree.root(1), tree.root(), ())
    with pytest.raises(ProofError):
        verify_consistency(6, 5, tree.root(), tree.root(), ())
    with pytest.raises(ProofError):
        verify_consistency(5, 5, tree.root(), tree.root(), (tree.root(),))


@given(n=st.integers(2, 200), seed=st.integers(0, 2**32), flip=st.integers(0, 255))
def test_any_flipped_bit_in_a_proof_is_caught(n: int, seed: int, flip: int) -> None:
    d = data(n)
    tree = tree_of(d)
    rng = random.Random(seed)
    m = rng.randrange(n)
    proof = tree.inclusion_proof(m, n)
    if proof.path:
        i = rng.randrange(len(proof.path))
        bad = bytearray(proof.path[i])
        bad[flip % 32] ^= 1 << (flip % 8)
        path = (*proof.path[:i], bytes(bad), *proof.path[i + 1:])
        with pytest.raises(ProofError):
            verify_inclusion(leaf_hash(d[m]), m, n, path, tree.root())
    old = rng.randrange(1, n)
    cproof = tree.consistency_proof(old, n)
    i = rng.randrange(len(cproof.path))
    bad = bytearray(cproof.path[i])
    bad[flip % 32] ^= 1 << (flip % 8)
    path = (*cproof.path[:i], bytes(bad), *cproof.path[i + 1:])
    with pytest.raises(ProofError):
        verify_consistency(old, n, tree.root(old), tree.root(), path)


# -- misuse and malformed input ----------------------------------------------------------

def test_out_of_range_requests_are_local_errors() -> None:
    tree = tree_of(data(4))
    with pytest.raises(LocalLedgerError):
        tree.inclusion_proof(4)
    with pytest.raises(LocalLedgerError):
        tree.inclusion_proof(0, 5)
    with pytest.raises(LocalLedgerError):
        tree.consistency_proof(3, 2)
    with pytest.raises(LocalLedgerError):
        tree.root(5)
    with pytest.raises(LocalLedgerError):
        tree.append(b"short")
    assert tree.size == 4


def test_malformed_proofs_are_remote_errors() -> None:
    tree = tree_of(data(9))
    proof = tree.inclusion_proof(3)
    assert InclusionProof.from_json(proof.to_json()) == proof
    assert InclusionProof.from_plain(proof.to_plain()) == proof
    cproof = tree.consistency_proof(4)
    assert ConsistencyProof.from_json(cproof.to_json()) == cproof
    assert ConsistencyProof.from_plain(cproof.to_plain()) == cproof
    bad_inputs = [
        [], {"index": 1, "size": 2}, {"index": -1, "size": 2, "path": []},
        {"index": 1, "size": 2, "path": ["zz"]}, {"index": 1, "size": 2, "path": ["ab"]},
        {"index": True, "size": 2, "path": []}, {"index": 1, "size": 2, "path": [], "x": 1},
        {"index": 1, "size": 2, "path": ["00" * 32] * 70},
    ]
    for bad in bad_inputs:
        with pytest.raises(RemoteLedgerError):
            InclusionProof.from_json(bad)
    with pytest.raises(ProofError):
        verify_inclusion(b"short", 0, 1, (), EMPTY_ROOT)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(b""), 0, 0, (), EMPTY_ROOT)
