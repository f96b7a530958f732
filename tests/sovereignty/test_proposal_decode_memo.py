"""`Proposal.decode` is memoised on the exact bytes (the policy store decodes every stored
proposal on each `policies()` read): the memo must never let bytes through that the
uncached decoder refuses, nor hand back anything but what those bytes say."""

from __future__ import annotations

import pytest
from gd_testkit import key_from_int

from gd.protocol import sovereignty_agreements
from gd.protocol.policy_rules import ShareRule, Subject
from gd.protocol.sovereignty_agreements import Proposal, ProposalError, ProposalKind

A, B = key_from_int(21), key_from_int(22)


def _proposal(hlc: int) -> Proposal:
    rule = ShareRule(Subject.parse(f"peer:{B.peer_id}"), "turbofan")
    return Proposal.create(A, ProposalKind.SHARE, B.peer_id, rule, hlc)


def test_the_same_bytes_decode_once_and_give_the_same_proposal() -> None:
    data = _proposal(7).encode()
    before = sovereignty_agreements._decode_proposal.cache_info().misses
    first, again = Proposal.decode(data), Proposal.decode(data)
    assert first == again == _proposal(7)
    assert again is first  # served from the memo
    assert sovereignty_agreements._decode_proposal.cache_info().misses == before + 1


def test_a_tampered_copy_of_cached_bytes_is_still_refused() -> None:
    data = _proposal(8).encode()
    Proposal.decode(data)  # now cached
    sig_at = data.rindex(_proposal(8).signature)
    forged = data[:sig_at] + bytes([data[sig_at] ^ 1]) + data[sig_at + 1:]
    for _ in range(2):  # a refusal is not cached either
        with pytest.raises(ProposalError, match="not signed"):
            Proposal.decode(forged)
    other = data.replace(A.peer_id.encode(), B.peer_id.encode(), 1)
    with pytest.raises(ProposalError):
        Proposal.decode(other)
