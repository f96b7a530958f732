"""One outbound ledger link's core (gd.ledger.link_core): the queue's bounds, what one
write carries, the gossip timer and the back-off — with explicit times, no streams."""

from __future__ import annotations

import pytest

from gd.ledger.ledger_frames import LedgerGossip, RaftFrame
from gd.ledger.link_core import (
    GOSSIP_INTERVAL_S,
    REOPEN_BACKOFF_MAX_S,
    REOPEN_BACKOFF_S,
    OutboundLink,
)

GOSSIP = LedgerGossip(head=b"", voters=("a",))


def test_the_queue_is_bounded_in_messages_and_bytes() -> None:
    link = OutboundLink(max_messages=3, max_bytes=10)
    assert link.offer(b"1234") and link.offer(b"1234")
    assert not link.offer(b"123")  # 11 bytes would be over
    assert link.offer(b"12")
    assert not link.offer(b"")  # 3 messages already
    assert link.queued_bytes == 10 and len(link.queue) == 3


def test_a_write_takes_a_bounded_batch_and_gossips_once_per_interval() -> None:
    link = OutboundLink(batch_bytes=5)
    for data in (b"aaa", b"bbb", b"ccc"):
        link.offer(data)
    link.opened()
    first = link.take(10.0, GOSSIP)
    assert first == [RaftFrame(b"aaa"), RaftFrame(b"bbb"), GOSSIP]  # 6 >= 5 bytes: stop
    assert link.pending
    assert link.take(10.5, GOSSIP) == [RaftFrame(b"ccc")]
    assert not link.pending and link.queued_bytes == 0
    assert link.take(10.0 + GOSSIP_INTERVAL_S - 0.01, GOSSIP) == []
    assert link.take(10.0 + GOSSIP_INTERVAL_S, GOSSIP) == [GOSSIP]
    link.opened()  # a new stream hears our head at once
    assert link.take(10.0 + GOSSIP_INTERVAL_S, GOSSIP) == [GOSSIP]


def test_failed_opens_back_off_doubling_up_to_the_max() -> None:
    link = OutboundLink()
    now, waits = 0.0, []
    for _ in range(8):
        assert link.blocked(now, True) is None
        link.open_failed(now)
        waits.append(link.retry_at - now)
        assert link.blocked(link.retry_at - 0.01, True) == 0  # still waiting
        now = link.retry_at
    assert waits[:3] == pytest.approx([REOPEN_BACKOFF_S, 2 * REOPEN_BACKOFF_S,
                                       4 * REOPEN_BACKOFF_S])
    assert max(waits) == pytest.approx(REOPEN_BACKOFF_MAX_S)
    link.opened()
    assert link.backoff == REOPEN_BACKOFF_S


def test_while_blocked_queued_messages_are_dropped_and_counted() -> None:
    link = OutboundLink()
    link.offer(b"x")
    link.offer(b"y")
    link.write_failed(1.0)
    assert link.blocked(1.0 + link.backoff / 2, True) == 2
    assert not link.queue and link.queued_bytes == 0
    assert link.blocked(1.0 + link.backoff, True) is None


def test_a_disconnected_peer_drops_the_queue_and_is_retried_at_once_on_reconnect() -> None:
    link = OutboundLink()
    link.open_failed(0.0)
    link.open_failed(0.2)
    link.offer(b"x")
    assert link.blocked(0.3, False) == 1
    assert link.blocked(0.3, True) is None  # no back-off left from before
    assert link.backoff == REOPEN_BACKOFF_S
