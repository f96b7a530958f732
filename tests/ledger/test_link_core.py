"""One outbound ledger link's core (gd.ledger.link_core): the queue's bounds, what one
write carries, the gossip timer, the back-off and the silence watch — with explicit
times, no streams."""

from __future__ import annotations

import pytest

from gd.ledger.ledger_frames import LedgerGossip, RaftFrame
from gd.ledger.link_core import (
    GOSSIP_INTERVAL_S,
    REOPEN_BACKOFF_MAX_S,
    REOPEN_BACKOFF_S,
    SILENT_MAX_S,
    SILENT_S,
    OutboundLink,
)
from gd.ledger.raft_messages import Heartbeat

GOSSIP = LedgerGossip(head=b"", voters=("a",))


def sized(n: int) -> Heartbeat:
    """A Raft message whose `size` is `n` (>= 50): the link counts messages at it."""
    msg = Heartbeat("a", "x" * (n - 49), 1)
    assert msg.size == n
    return msg


def test_the_queue_is_bounded_in_messages_and_bytes() -> None:
    link = OutboundLink(max_messages=3, max_bytes=260)
    assert link.offer(sized(80)) and link.offer(sized(80))
    assert not link.offer(sized(101))  # 261 bytes would be over
    assert link.offer(sized(50))
    assert not link.offer(sized(50))  # 3 messages already
    assert link.queued_bytes == 210 and len(link.queue) == 3


def test_a_write_takes_a_bounded_batch_and_gossips_once_per_interval() -> None:
    link = OutboundLink(batch_bytes=100)
    a, b, c = sized(60), sized(61), sized(62)
    for msg in (a, b, c):
        link.offer(msg)
    link.opened()
    first = link.take(10.0, GOSSIP)
    assert first == [RaftFrame(a), RaftFrame(b), GOSSIP]  # 121 >= 100 bytes: stop
    assert link.pending
    assert link.take(10.5, GOSSIP) == [RaftFrame(c)]
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
    link.offer(sized(50))
    link.offer(sized(51))
    link.write_failed(1.0)
    assert link.blocked(1.0 + link.backoff / 2, True) == 2
    assert not link.queue and link.queued_bytes == 0
    assert link.blocked(1.0 + link.backoff, True) is None


def test_a_disconnected_peer_drops_the_queue_and_is_retried_at_once_on_reconnect() -> None:
    link = OutboundLink()
    link.open_failed(0.0)
    link.open_failed(0.2)
    link.offer(sized(50))
    assert link.blocked(0.3, False) == 1
    assert link.blocked(0.3, True) is None  # no back-off left from before
    assert link.backoff == REOPEN_BACKOFF_S


def test_a_peer_silent_for_the_limit_is_reported_once_per_spell_with_a_doubling_wait() -> None:
    link = OutboundLink()
    assert SILENT_S > 2 * GOSSIP_INTERVAL_S  # two lost gossips are not yet silence
    assert not link.silent(100.0)  # the first look starts the count
    assert not link.silent(100.0 + SILENT_S - 0.01)
    assert link.silent(100.0 + SILENT_S)
    # Reported: the next spell is twice as long, counted from the report.
    t = 100.0 + SILENT_S
    assert not link.silent(t + 2 * SILENT_S - 0.01)
    assert link.silent(t + 2 * SILENT_S)
    t += 2 * SILENT_S
    for _ in range(20):  # it never waits longer than the max
        t += SILENT_MAX_S
        assert link.silent(t)


def test_hearing_from_the_peer_resets_the_count_and_the_wait() -> None:
    link = OutboundLink()
    link.silent(0.0)
    assert link.silent(SILENT_S)  # the wait is now doubled
    link.heard(SILENT_S + 1.0)
    assert not link.silent(2 * SILENT_S + 0.5)  # counted from what was heard
    assert link.silent(2 * SILENT_S + 1.0)  # and back to the first limit
    for t in range(100):  # a peer heard every second is never silent
        link.heard(1000.0 + t)
        assert not link.silent(1000.0 + t + GOSSIP_INTERVAL_S * 0.99)
