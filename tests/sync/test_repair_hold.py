"""When a due repair round waits for a peer catching up on our feed (ADR 0061): only
while it is pulling, and never longer than `MAX_REPAIR_HOLD_S` in a row."""

from __future__ import annotations

from gd.node.services.sync_state import CATCH_UP_IDLE_S, MAX_REPAIR_HOLD_S, PeerSyncState


def test_a_peer_served_to_our_head_or_never_served_holds_nothing() -> None:
    st = PeerSyncState()
    assert not st.hold_repair(100.0)
    st.served_behind_at = None
    assert not st.hold_repair(200.0)


def test_a_peer_that_stopped_pulling_is_not_waited_for() -> None:
    st = PeerSyncState(served_behind_at=100.0)
    assert st.hold_repair(100.0 + CATCH_UP_IDLE_S / 2)
    assert not st.hold_repair(100.0 + CATCH_UP_IDLE_S)
    assert st.repair_held_since is None


def test_a_peer_pulling_forever_holds_the_round_at_most_the_bound() -> None:
    st = PeerSyncState()
    now = 1000.0
    held = 0
    for _ in range(10_000):  # bounded: the hold must end long before this
        st.served_behind_at = now  # a batch short of our head every second
        if not st.hold_repair(now):
            break
        held += 1
        now += 1.0
    assert held == MAX_REPAIR_HOLD_S
    # The round ran; the next one due may be held again, for at most as long.
    st.served_behind_at = now
    assert st.hold_repair(now) and st.repair_held_since == now


def test_a_peer_with_a_pull_open_is_waited_for_even_once_served_to_our_head() -> None:
    # It closes the pull only after committing what it read: until then a round would
    # name genes it holds in memory but not yet in its store.
    st = PeerSyncState(served_behind_at=None, pulls_open=1)
    assert st.hold_repair(10.0) and st.hold_repair(10.0 + 10 * CATCH_UP_IDLE_S)
    st.pulls_open = 0
    assert not st.hold_repair(10.0 + 10 * CATCH_UP_IDLE_S)
