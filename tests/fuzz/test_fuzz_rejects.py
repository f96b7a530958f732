"""Garbage is rejected, not merely survived.

The atheris target (fuzz_wire.py) checks that decoders raise nothing but their
documented error; these seeded tests check the other half: random bytes never decode to
an accepted message, mutated valid encodings are refused or decode to a message whose
canonical encoding round-trips, and a gene whose signature or signed body was altered
fails verification. The seed is fixed, so a failure replays exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from gd.genome import Codon, Gene, NodeKey
from gd.genome.errors import DecodeError, SignatureError, ValidationError
from gd.ledger.raft_messages import RaftMessage, VoteRequest
from gd.ledger.raft_records import RaftRemoteError
from gd.protocol.sync_messages import ChangeBatch, ChangesRequest, SyncProtocolError

SEED = 20240611
INPUTS = 3_000
KEY = NodeKey.from_seed(b"\x05" * 32)

Decoder = Callable[[bytes], object]
DECODERS: dict[str, tuple[Decoder, type[Exception], bytes]] = {
    "raft": (RaftMessage.decode, RaftRemoteError,
             VoteRequest(frm="node-a", to="node-b", term=3, last_index=5, last_term=2).encode()),
    "changes-request": (ChangesRequest.decode, SyncProtocolError,
                        ChangesRequest(since=7, max_genes=16).encode()),
    "change-batch": (ChangeBatch.decode, SyncProtocolError,
                     ChangeBatch(since=7, upto=9, more=False, genes=()).encode()),
}


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_random_bytes_never_decode_to_an_accepted_message(name: str) -> None:
    decode, error, _ = DECODERS[name]
    rng = random.Random(f"{SEED}/{name}")
    for _ in range(INPUTS):
        data = rng.randbytes(rng.randrange(0, 200))
        with pytest.raises(error):
            decode(data)


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_mutated_valid_encodings_are_refused_or_canonical(name: str) -> None:
    decode, error, valid = DECODERS[name]
    rng = random.Random(f"{SEED}/mut/{name}")
    refused = 0
    for _ in range(INPUTS):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[:rng.randrange(len(data))]
        try:
            message = decode(bytes(data))
        except error:
            refused += 1
            continue
        # Accepted: it must be a well-formed message whose canonical form is stable.
        again = decode(message.encode())
        assert again == message and again.encode() == message.encode()
    assert refused > INPUTS // 10  # most mutations break the format and are refused


def _gene() -> Gene:
    return Gene.create(KEY, domain="turbofan", name="fuzzed",
                       codons=[Codon.simple("s11", ">", 47.0)], action="inspect")


def test_a_gene_with_a_mutated_signature_fails_verification() -> None:
    gene = _gene()
    gene.verify()
    rng = random.Random(SEED)
    for position in range(len(gene.signature)):
        sig = bytearray(gene.signature)
        sig[position] ^= 1 << rng.randrange(8)
        forged = Gene.from_wire({**gene.to_wire(), "sig": bytes(sig)})
        assert forged.signature == bytes(sig)
        with pytest.raises(SignatureError):
            forged.verify()


def test_a_gene_with_a_mutated_body_fails_verification_or_decoding() -> None:
    gene = _gene()
    wire = gene.to_wire()
    body = wire["body"]
    assert isinstance(body, bytes | dict), type(body)
    rng = random.Random(SEED)
    checked = 0
    for _ in range(300):
        if isinstance(body, bytes):
            mutated = bytearray(body)
            mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
            forged_body: object = bytes(mutated)
        else:
            forged_body = {**body, "name": f"fuzzed-{rng.randrange(10**6)}"}
        try:
            forged = Gene.from_wire({**wire, "body": forged_body})
        except (ValidationError, DecodeError):
            continue  # refused on decoding: also a rejection
        checked += 1
        with pytest.raises(SignatureError):
            forged.verify()
    assert checked > 0  # some mutations decode, and those must fail verification
