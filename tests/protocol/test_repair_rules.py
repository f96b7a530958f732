"""Repair's fetch rules and a whole repair round, sans-I/O: two in-memory item sets
reconcile through real frames, the initiator fetches what it lacks, and a responder's
bad answers are the responder's fault."""

from __future__ import annotations

import pytest
from gd_testkit import key_from_int, make_gene

from gd.genome import canonical
from gd.genome.gene import Gene
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.reconcile import Reconciler
from gd.protocol.reconcile_messages import ReconcileMessage
from gd.protocol.repair import (
    RepairRound,
    answer_step,
    check_versions,
    items_for,
    pack_versions,
    versions_for,
)
from gd.protocol.sync_frames import MAX_FETCH_HASHES, FetchVersions, ReconcileStep, Versions
from gd.protocol.wire import decode_frame, encode_frame

ALICE = key_from_int(11)
BOB = key_from_int(12)


def genes(key, n: int, prefix: str = "g") -> list[Gene]:
    return [make_gene(key, name=f"{prefix}-{i:04d}") for i in range(n)]


def wire(msg):
    return decode_frame(encode_frame(msg))


def share_all(gene: Gene) -> Gene | None:
    return gene


def test_a_round_finds_and_fetches_exactly_what_the_initiator_lacks():
    common = genes(ALICE, 30, "common")
    only_b = genes(BOB, 300, "b")  # more than one fetch chunk
    only_a = genes(ALICE, 4, "a")
    ours = common + only_a
    theirs = {g.version_hash: g for g in common + only_b}
    round_ = RepairRound(items_for(ALICE.peer_id, ours, share_all), zstd=True)
    responder = Reconciler.responder(items_for(ALICE.peer_id, theirs.values(), share_all))
    step: ReconcileStep | None = round_.start()
    for _ in range(50):  # O(log n) round trips; bounded
        if step is None:
            break
        step = round_.receive(wire(answer_step(responder, wire(step))))
    assert step is None
    assert round_.need == {g.version_hash for g in only_b}
    assert round_.have == {g.version_hash for g in only_a}
    fetched: list[Gene] = []
    fetches = round_.fetches()
    assert [len(f.hashes) for f in fetches] == [MAX_FETCH_HASHES, 300 - MAX_FETCH_HASHES]
    for fetch in fetches:
        served = versions_for(wire(fetch).hashes, theirs.get, lambda gid: None,
                              lambda: theirs.values(), share_all)
        reply = wire(pack_versions(served, fetch.zstd))
        fetched += check_versions(reply, fetch.hashes, lambda g: True).good
    assert {g.version_hash for g in fetched} == {g.version_hash for g in only_b}
    assert round_.end().you_lack == 4


def test_items_name_what_the_peer_may_see_and_what_it_authored():
    mine, bobs = genes(ALICE, 3), genes(BOB, 2)

    def only_first(gene: Gene) -> Gene | None:
        return gene if gene.name.endswith("0000") else None

    items = items_for(BOB.peer_id, mine + bobs, only_first)
    assert sorted(h for _, h in items) == sorted(
        [mine[0].version_hash, bobs[0].version_hash, bobs[1].version_hash])


def test_a_fetch_serves_only_versions_held_and_shared():
    held = genes(ALICE, 3)
    by_hash = {g.version_hash: g for g in held}
    withheld = held[1]

    def policy(gene: Gene) -> Gene | None:
        return None if gene.id == withheld.id else gene

    unknown = b"\x01" * 32
    served = versions_for([h.version_hash for h in held] + [unknown], by_hash.get,
                          lambda gid: None, lambda: held, policy)
    assert served == [held[0], held[2]]


def test_with_the_named_items_a_fetch_never_scans_the_heads():
    """A peer asking for hashes we never named (or derived forms) costs a lookup per
    hash, not a pass over every stored head (`derived`: the peer's `RepairItems`)."""
    held = genes(ALICE, 4)
    heads = {g.id: g for g in held}
    derived_form = genes(BOB, 1, "derived")[0]  # stands in for a per-receiver form
    source = held[3]
    named = {g.version_hash: g.id for g in held[:3]} | {derived_form.version_hash: source.id}
    reads: list[str] = []

    def head_of(gene_id: str) -> Gene | None:
        reads.append(gene_id)
        return heads.get(gene_id)

    def policy(gene: Gene) -> Gene | None:
        return derived_form if gene.id == source.id else gene

    def scan() -> list[Gene]:
        raise AssertionError("the heads were scanned")

    unknown = [bytes([n]) * 32 for n in range(1, 40)]
    asked = [held[0].version_hash, derived_form.version_hash, *unknown]
    served = versions_for(asked, {g.version_hash: g for g in held}.get, head_of, scan,
                          policy, named.get)
    assert served == [held[0], derived_form]
    assert reads == [held[0].id, source.id]


def test_an_answer_with_a_version_not_asked_for_is_the_peers_fault():
    asked, extra = genes(ALICE, 2), genes(ALICE, 1, "extra")
    reply = pack_versions([asked[0], extra[0]], zstd=False)
    with pytest.raises(RemoteProtocolError, match="not asked for"):
        check_versions(reply, [g.version_hash for g in asked], lambda g: True)


def test_an_answer_with_more_genes_than_asked_is_the_peers_fault():
    sent = genes(ALICE, 3)
    reply = pack_versions(sent, zstd=False)
    with pytest.raises(RemoteProtocolError, match="at most 2"):
        check_versions(reply, [g.version_hash for g in sent[:2]], lambda g: True)


@pytest.mark.parametrize("reply, reason", [
    (FetchVersions(()), "expected gd.reconcile.versions"),
    (Versions(genes=b"\xc1", zstd=False), "bad gene list"),
    (Versions(genes=b"nope", zstd=True), "zstd"),
])
def test_malformed_answers_are_remote_errors(reply, reason):
    with pytest.raises(RemoteProtocolError, match=reason):
        check_versions(reply, [b"\x00" * 32], lambda g: True)


def test_a_refused_or_forged_gene_is_rejected_alone():
    good, forged = genes(ALICE, 2)
    plain = [good.to_wire(), dict(forged.to_wire(), sig=b"\x00" * 64)]
    reply = Versions(genes=canonical.encode_plain(plain), zstd=False)
    checked = check_versions(reply, [good.version_hash, forged.version_hash], lambda g: True)
    assert [g.id for g in checked.good] == [good.id]
    assert [r.gene_id for r in checked.rejected] == [forged.id]


def test_a_garbled_reconcile_step_is_the_peers_fault_on_both_sides():
    round_ = RepairRound(items_for(ALICE.peer_id, genes(ALICE, 3), share_all))
    round_.start()
    # (A step whose message does not decode is refused by the frame decoder:
    # tests/protocol/test_reconcile.py.) Past the rounds' bound is the peer's fault too.
    round_.reconciler.max_rounds = 0
    with pytest.raises(RemoteProtocolError, match="bad reconcile message"):
        round_.receive(ReconcileStep(ReconcileMessage()))
    with pytest.raises(RemoteProtocolError, match=r"expected gd\.reconcile\.step"):
        round_.receive(Versions(genes=b"", zstd=False))
    responder = Reconciler.responder([])
    assert answer_step(responder, ReconcileStep(ReconcileMessage())).msg == ReconcileMessage()
