"""Echo skip on the feed (issue 15, ADR 0048): a version the receiver itself authored is
passed by the store's reader as (seq, None), undecoded and unjudged, and the batch the
receiver gets is exactly what the old path (decode, judge, drop in `feed_policy`) sent:
the same `upto`, `more` and genes, the checkpoint past trailing echoes, and a peer's gene
that we edited since (our version, our author) still goes to that peer."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from gd_testkit import key_from_int, make_gene

from gd.genome import canonical
from gd.genome.gene import Gene, ShareScope
from gd.node.services.sovereignty_views import SovereignSenderView, echo_free_feed
from gd.node.services.sync_serve import feed_policy
from gd.node.services.sync_views import PolicyView, share_all
from gd.node.store.cortex import Cortex
from gd.node.store.gene_records import Head
from gd.node.store.sync_store import SyncStore, authored_by
from gd.protocol.policy_rules import PeerInfo, ShareRule, Subject
from gd.protocol.sovereignty import PolicySet, SentGene
from gd.protocol.sovereignty_anonymise import anonymisation_secret
from gd.protocol.sync import ChangesRequest, SyncSender

A, B = key_from_int(71), key_from_int(72)
ME = PeerInfo(A.peer_id, "acme", "eu-west")
BOB = PeerInfo(B.peer_id, "bobco", "eu-west")
# Both sides of a turbofan agreement between acme and bob, as acme holds it.
# Our rule lets what we send be forwarded (so our edit of a forwardable gene of Bob's
# may go back to him).
AGREED = PolicySet(ME, (ShareRule(Subject.parse(f"peer:{B.peer_id}"), "turbofan",
                                  allow_forward=True),), (),
                   {B.peer_id: (ShareRule(Subject.parse("org:acme"), "turbofan"),)})


class Feed:
    """Acme's Cortex: its own genes, Bob's (received), and one of Bob's edited by Acme,
    interleaved, with Bob's versions last (a feed that ends in echoes)."""

    def __init__(self, path: Path) -> None:
        self.cortex = Cortex.open(path)
        self.store = SyncStore(self.cortex, local_peer=A.peer_id)
        bobs = [make_gene(B, f"bob-{i}") for i in range(6)]
        # Bob lets bob-1 be forwarded, so our edit of it may go back to him.
        bobs[1] = Gene.create(B, domain="turbofan", name="bob-1", action="inspect",
                              codons=bobs[1].codons, hlc=1 << 16,
                              scope=ShareScope(forward=True))
        self.store.apply_batch(B.peer_id, bobs[:3], 3)
        self.cortex.put_gene(make_gene(A, "acme-0"))
        self.edited = bobs[1].edited(A, hlc=5 << 16, action="overhaul")
        self.cortex.put_gene(self.edited)
        self.cortex.put_gene(make_gene(A, "acme-1"))
        self.store.apply_batch(B.peer_id, bobs[3:], 6)
        self.bobs = bobs
        self.decoded = 0
        version_of = self.cortex.version_of

        def counting(raw: bytes, head: Head | None) -> Gene:
            self.decoded += 1
            return version_of(raw, head)

        self.cortex.version_of = counting  # type: ignore[method-assign]


@pytest.fixture
def feed(tmp_path: Path) -> Iterator[Feed]:
    f = Feed(tmp_path / "acme")
    yield f
    f.cortex.close()


class Service:
    """What `SovereignSenderView` reads from `SovereigntyService`."""

    def __init__(self, feed: Feed, wrapped: bool) -> None:
        self.store = self
        self.key = A
        self.secret = anonymisation_secret(A)
        self.sent: list[SentGene] = []
        self.audit = self
        self.sync = _Sync(feed, wrapped)

    def policies(self) -> PolicySet:
        return AGREED

    def record_sent(self, peer: str, sent: Sequence[SentGene]) -> int:
        self.sent += sent
        return len(sent)


class _Sync:
    def __init__(self, feed: Feed, wrapped: bool) -> None:
        self.store = feed.store
        # A wrapped reader (as tests inject faults) is read as it is: the old path.
        self.read_feed: Any = (lambda s, n: feed.store.read_feed(s, n)) if wrapped \
            else feed.store.read_feed


def pull_all(sender: SyncSender, max_genes: int) -> list[tuple[int, bool, list[bytes]]]:
    """Every answer of a full pull from 0, as (upto, more, version hashes)."""
    since, answers = 0, []
    for _ in range(100):
        upto, more, genes = sender.select(ChangesRequest(since, max_genes))
        answers.append((upto, more, [g.version_hash for g in genes]))
        since = upto
        if not more:
            return answers
    raise AssertionError("the pull did not end in 100 requests")


def test_the_store_passes_the_receivers_versions_undecoded(feed: Feed) -> None:
    entries = list(feed.store.read_feed(0, 100, skip_author=B.peer_id))
    assert [seq for seq, _ in entries] == list(range(1, 10))
    skipped = [seq for seq, gene in entries if gene is None]
    assert skipped == [1, 2, 3, 7, 8, 9]  # Bob's six versions
    sent = [gene for _, gene in entries if gene is not None]
    assert feed.edited.version_hash in {g.version_hash for g in sent}
    assert all(g.author == A.peer_id for g in sent)
    assert feed.decoded == 3  # only Acme's versions were built
    # Without a receiver to skip, every entry is a gene, as before.
    assert all(g is not None for _, g in feed.store.read_feed(0, 100))


def test_authored_by_reads_the_author_not_any_mention(feed: Feed) -> None:
    raw = canonical.encode(feed.edited.to_wire())
    needle = canonical.encode_plain(B.peer_id)
    assert needle in raw  # Bob is named in the edit's version vector
    assert not authored_by(raw, B.peer_id, needle)
    assert authored_by(canonical.encode(feed.bobs[0].to_wire()), B.peer_id, needle)


@pytest.mark.parametrize("max_genes", [1, 2, 5])
def test_plain_view_batches_are_what_the_old_path_sent(feed: Feed, max_genes: int) -> None:
    def sender(read: Any) -> SyncSender:
        view = PolicyView(B.peer_id, read, share_all)
        return SyncSender(B.peer_id, view.read_feed, feed_policy(view))

    old = pull_all(sender(feed.store.read_feed), max_genes)
    new = pull_all(sender(lambda s, n: feed.store.read_feed(s, n, skip_author=B.peer_id)),
                   max_genes)
    assert new == old
    assert new[-1][0] == 9  # the checkpoint moves past the trailing echoes
    assert feed.edited.version_hash in {h for *_, hs in new for h in hs}
    assert not {b.version_hash for b in feed.bobs} & {h for *_, hs in new for h in hs}


@pytest.mark.parametrize("max_genes", [1, 2, 5])
def test_sovereign_view_skips_echoes_and_sends_the_same(feed: Feed, max_genes: int) -> None:
    def run(wrapped: bool) -> tuple[list[tuple[int, bool, list[bytes]]], int, Service]:
        svc = Service(feed, wrapped)
        view = SovereignSenderView(svc, BOB)  # type: ignore[arg-type]
        feed.decoded = 0
        answers = pull_all(SyncSender(B.peer_id, view.read_feed, feed_policy(view)),
                           max_genes)
        view.finish_batch()
        return answers, feed.decoded, svc

    old, old_decoded, old_svc = run(wrapped=True)
    new, new_decoded, new_svc = run(wrapped=False)
    assert new == old and new[-1][0] == 9
    # The edit is ours: Bob gets it (the agreement covers turbofan both ways).
    assert feed.edited.version_hash in {h for *_, hs in new for h in hs}
    assert [s.original.version_hash for s in new_svc.sent] == \
        [s.original.version_hash for s in old_svc.sent]
    # Old: all nine entries built (some twice: a full batch reads one entry ahead).
    # New: only Acme's three, plus at most one read ahead per request.
    assert old_decoded >= 9 and new_decoded <= 3 + len(new)


def test_echo_free_feed_keeps_a_wrapped_reader(feed: Feed) -> None:
    plain = echo_free_feed(Service(feed, wrapped=False), BOB)  # type: ignore[arg-type]
    assert [g for _, g in plain(0, 100)].count(None) == 6
    wrapped = echo_free_feed(Service(feed, wrapped=True), BOB)  # type: ignore[arg-type]
    assert [g for _, g in wrapped(0, 100)].count(None) == 0
