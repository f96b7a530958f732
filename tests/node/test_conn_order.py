"""`ConnectionOrder`: streams go on a peer's newest connection (ADR 0056)."""

from __future__ import annotations

import gc
from types import SimpleNamespace

from gd_testkit import key_from_int
from libp2p.connection_types import ConnectionType

from gd.node.net.conn_order import ConnectionOrder
from gd.node.net.host import to_id

PEER = to_id(key_from_int(2).peer_id)


class Muxed:
    """Stands in for a muxed connection (weak-referenceable, compared by identity)."""


def conn(muxed: Muxed) -> SimpleNamespace:
    return SimpleNamespace(muxed_conn=muxed)


def test_the_newest_opened_connection_is_chosen_whatever_the_list_order() -> None:
    order = ConnectionOrder()
    first, second, third = Muxed(), Muxed(), Muxed()
    for m in (first, second, third):
        order.opened(m)
    order.opened(first)  # a repeated event does not make it newer
    listed = [conn(second), conn(third), conn(first)]
    assert order.select(listed, PEER).muxed_conn is third  # type: ignore[arg-type]
    assert order.select(listed[::-1], PEER).muxed_conn is third  # type: ignore[arg-type]
    assert order.rank(first) < order.rank(second) < order.rank(third)


def test_a_direct_connection_is_chosen_before_a_newer_relayed_one() -> None:
    order = ConnectionOrder()
    direct, relayed, newest_direct = Muxed(), Muxed(), Muxed()
    order.opened(direct)
    order.opened(relayed)

    def typed(muxed: Muxed, kind: ConnectionType) -> SimpleNamespace:
        return SimpleNamespace(muxed_conn=muxed, get_connection_type=lambda: kind)

    listed = [typed(direct, ConnectionType.DIRECT), typed(relayed, ConnectionType.RELAYED)]
    assert order.select(listed, PEER).muxed_conn is direct  # type: ignore[arg-type]
    order.opened(newest_direct)
    listed.append(conn(newest_direct))  # cannot say its type: counted as direct
    assert order.select(listed, PEER).muxed_conn is newest_direct  # type: ignore[arg-type]


def test_newer_compares_the_connections_streams_came_on() -> None:
    order = ConnectionOrder()
    old, new = Muxed(), Muxed()
    order.opened(old)
    order.opened(new)
    on_old, on_new = SimpleNamespace(muxed_conn=old), SimpleNamespace(muxed_conn=new)
    assert order.newer(on_new, on_old)
    assert not order.newer(on_old, on_new) and not order.newer(on_new, on_new)
    # A stream on a connection we never saw open (or no connection at all) is oldest.
    assert not order.newer(SimpleNamespace(muxed_conn=Muxed()), on_old)
    assert not order.newer(SimpleNamespace(), on_old)
    assert order.rank(object()) == 0 == order.rank(None)


def test_a_closed_connection_leaves_the_order() -> None:
    order = ConnectionOrder()
    gone = Muxed()
    order.opened(gone)
    assert len(order._rank) == 1
    del gone
    gc.collect()
    assert len(order._rank) == 0


def test_unnumbered_connections_keep_the_librarys_choice() -> None:
    order = ConnectionOrder()
    picked: list[object] = []

    def library(connections, peer_id):  # what py-libp2p would have chosen
        picked.append(peer_id)
        return connections[-1]

    order._fallback = library
    listed = [conn(Muxed()), conn(Muxed())]
    assert order.select(listed, PEER) is listed[-1]  # type: ignore[arg-type]
    assert picked == [PEER]


def test_only_a_libp2p_swarm_gets_the_choice_installed() -> None:
    order = ConnectionOrder()
    stand_in = SimpleNamespace(_select_connection="untouched")
    assert order.install(stand_in) is False
    assert stand_in._select_connection == "untouched"
