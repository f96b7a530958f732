"""Circuit relay v2 on 127.0.0.1: a private node reached only through its region's relay."""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from pathlib import Path

import pytest
import trio
from daemon_cluster import certify, launch, until
from gd_testkit import key_from_int, make_gene

from gd.node.config import (
    ConfigError,
    MeshSettings,
    NodeConfig,
    SyncSettings,
    parse_config,
    render_config,
)
from gd.node.daemon import Daemon, run_daemon
from gd.node.home import Home
from gd.node.net.bootstrap_file import BootstrapPeer, render_bootstrap
from gd.node.net.discovery import region_key
from gd.node.net.host import dialable_addrs, to_id
from gd.node.net.relay import (
    MAX_RELAY_ADDRS,
    REFRESH_MARGIN_S,
    RELAY_CAPABILITY,
    RESERVE_RETRY_S,
    ReservationBook,
    circuit_addr,
    circuit_relay,
    is_circuit_addr,
)
from gd.node.services.sync_service import share_all
from gd.node.store.cortex import Cortex

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
FAST = {"backoff_base_s": 0.2, "backoff_max_s": 1.0, "ping_interval_s": 0.5}
SHARE_ALL = {"debounce_s": 0.05}  # with the allow-all policy passed in-process below
R, A, B = (key_from_int(n).peer_id for n in (1, 2, 3))


# ---- addresses and the reservation book (sans-I/O) -------------------------------------------


def test_circuit_addresses_name_relay_and_destination() -> None:
    addr = circuit_addr(f"/ip4/10.0.0.1/tcp/4001/p2p/{R}", R, A)
    assert addr == f"/ip4/10.0.0.1/tcp/4001/p2p/{R}/p2p-circuit/p2p/{A}"
    assert is_circuit_addr(addr) and not is_circuit_addr(f"/ip4/10.0.0.1/tcp/4001/p2p/{R}")
    assert circuit_relay(addr, A) == (R, ("/ip4/10.0.0.1/tcp/4001",), addr)
    assert circuit_relay(f"/p2p/{R}/p2p-circuit", A) == (R, (), f"/p2p/{R}/p2p-circuit/p2p/{A}")


@pytest.mark.parametrize("addr", [
    "/ip4/10.0.0.1/tcp/4001/p2p-circuit/p2p/{A}",      # no relay named
    "/ip4/10.0.0.1/tcp/4001/p2p/{R}/p2p-circuit/p2p/{B}",  # leads to someone else
    "/p2p/{A}/p2p-circuit/p2p/{A}",                      # its own relay
    "/ip4/10.0.0.1/tcp/4001/p2p/{R}",                    # not a circuit at all
])
def test_bad_circuit_addresses_are_refused(addr: str) -> None:
    with pytest.raises(ValueError):
        circuit_relay(addr.format(A=A, B=B, R=R), A)


def test_book_reserves_up_to_wanted_and_refreshes_before_expiry() -> None:
    book = ReservationBook(wanted=2)
    assert book.due(0.0, [B, R, A]) == sorted([A, B, R])[:2]
    assert book.reserved(R, 3600.0, ("/ip4/10.0.0.1/tcp/1",))
    assert not book.reserved(R, 3700.0, ("/ip4/10.0.0.1/tcp/1",))  # same addresses
    assert book.due(0.0, [R]) == []                        # held, not near expiry
    assert book.due(3700.0 - REFRESH_MARGIN_S, [R]) == [R]  # refresh in time
    assert book.advertised(A) == [f"/ip4/10.0.0.1/tcp/1/p2p/{R}/p2p-circuit/p2p/{A}"]


def test_book_backs_off_a_refusing_relay_and_forgets_lost_ones() -> None:
    book = ReservationBook(wanted=1)
    book.failed(R, 10.0)
    assert book.due(10.0, [R]) == []
    assert book.due(10.0 + RESERVE_RETRY_S, [R]) == [R]
    book.reserved(R, 3600.0, tuple(f"/ip4/10.0.0.{i}/tcp/1" for i in range(9)))
    assert len(book.advertised(A)) == MAX_RELAY_ADDRS
    assert not book.prune(20.0, [R])
    assert book.prune(20.0, [])          # the relay disconnected
    assert book.advertised(A) == []
    book.reserved(R, 30.0, ("/ip4/10.0.0.1/tcp/1",))
    assert book.prune(30.0, [R])         # expired


def test_reachability_is_in_the_rendered_config_and_validated() -> None:
    cfg = NodeConfig(org="acme", region="eu", reachability="private", relay=True)
    text = render_config(cfg)
    assert 'reachability = "private"' in text
    assert parse_config(tomllib.loads(text)) == cfg
    with pytest.raises(ConfigError, match=r"node\.reachability"):
        parse_config({"node": {"org": "a", "region": "eu", "reachability": "hidden"}})


# ---- three daemons: A (private), R (relay), B --------------------------------------------------


@pytest.fixture
def homes():
    root = Path(tempfile.mkdtemp(prefix="gdr", dir="/tmp"))

    def make(name: str) -> Home:
        home = Home(root / name)
        home.root.mkdir()
        return home

    yield make
    shutil.rmtree(root, ignore_errors=True)


async def start(nursery: trio.Nursery, home: Home, n: int, *, boot: list[Daemon] = (),
                listen: tuple[str, ...] = LOOPBACK, cortex: Cortex | None = None,
                **node: object) -> Daemon:
    sync = SyncSettings(**SHARE_ALL) if cortex is not None else SyncSettings()
    cfg = NodeConfig(org=f"org{n}", region="eu", listen=listen, mesh=MeshSettings(**FAST),
                     sync=sync, **node)
    certify(home, cfg.org, cfg.region, key_from_int(n).peer_id)
    return await launch(nursery, home, cfg, key_from_int(n), cortex=cortex, listen=None,
                        boot=boot, share_policy=share_all if cortex is not None else None)


def relayed(d: Daemon, peer_id: str) -> bool:
    conns = d.host.get_network().get_connections(to_id(peer_id))
    return bool(conns) and all(
        any(is_circuit_addr(str(a)) for a in c.get_transport_addresses()) for c in conns)


def provider_addrs(d: Daemon, peer_id: str) -> list[str]:
    infos = d.dht.provider_store.get_providers(region_key("eu").encode())
    return [str(a) for i in infos if i.peer_id.to_base58() == peer_id for a in i.addrs]


async def test_a_private_node_is_reached_through_its_regions_relay(homes) -> None:
    home_a, home_b = homes("a"), homes("b")
    with Cortex.open(home_a.cortex_path) as cortex_a, \
            Cortex.open(home_b.cortex_path) as cortex_b:
        cortex_a.put_genes([make_gene(key_from_int(2), f"a{i}") for i in range(20)])
        await relay_scenario(home_a, cortex_a, home_b, cortex_b, homes("r"))


async def relay_scenario(home_a: Home, cortex_a: Cortex, home_b: Home, cortex_b: Cortex,
                         home_r: Home) -> None:
    async with trio.open_nursery() as nursery:
        # R relays but holds no Cortex: genes can reach B only from A, over the circuit.
        r = await start(nursery, home_r, 1, relay=True)
        # A listens nowhere: no direct dial can reach it, whatever anyone learns.
        a = await start(nursery, home_a, 2, boot=[r], listen=(), reachability="private",
                        cortex=cortex_a)
        assert a.host.get_transport_addrs() == [] and dialable_addrs(a.host) == []

        # A verifies R's signed relay capability, reserves, and re-provides its region
        # record with the relayed address: the record R stores names the circuit.
        await until(lambda: any(is_circuit_addr(x) for x in provider_addrs(r, A)))
        assert RELAY_CAPABILITY in r.gate.capabilities
        assert r.relay.protocol.resource_manager.get_reservation(to_id(A)) is not None
        assert a.table.get(R).capabilities == (RELAY_CAPABILITY,)
        assert dialable_addrs(a.host) == [f"{x}/p2p-circuit/p2p/{A}" for x in
                                          (d for d in dialable_addrs(r.host))]

        # B knows only R; it finds A through the DHT and dials it through R.
        b = await start(nursery, home_b, 3, boot=[r], cortex=cortex_b)
        await until(lambda: (rec := b.table.get(A)) is not None and rec.connected)
        assert relayed(b, A) and relayed(a, B)
        assert all(is_circuit_addr(x) for x in b.table.get(A).addrs)
        # The handshake over the circuit bound A's and B's own ids, not R's.
        assert a.table.get(B).org == "org3" and b.table.get(A).org == "org2"
        # Guarded gd streams work over the circuit, both ways.
        assert await b.gate.liveness.ping(A) > 0 and await a.gate.liveness.ping(B) > 0
        await until(lambda: len(list(cortex_b.genes())) == 20)  # sync pulled A's genes
        assert a.sync.state(B).served.genes == 20
        for d in (a, r, b):
            d.stop()


@pytest.mark.parametrize("claim", ["us", "eu"])
async def test_a_relay_refuses_peers_of_other_regions(homes, claim) -> None:
    """Another region, or ours merely claimed (no certificate): no relay service."""
    async with trio.open_nursery() as nursery:
        r = await start(nursery, homes("r"), 1, relay=True)
        cfg_region = NodeConfig(org="far", region=claim, listen=(), reachability="private",
                                mesh=MeshSettings(**FAST))
        boot = homes("a").root / "bootstrap-peers.toml"
        boot.write_text(render_bootstrap([BootstrapPeer(r.peer_id, tuple(dialable_addrs(
            r.host)), "eu")]))
        box: list[Daemon] = []
        nursery.start_soon(lambda: run_daemon(
            Home(boot.parent), cfg_region, key_from_int(2), cortex=None, listen=None,
            bootstrap=boot, ready_callback=box.append, handle_signals=False))
        await until(lambda: box and (rec := box[0].table.get(R)) is not None
                    and rec.connected)
        a = box[0]
        # A is in another region (or only says it is in ours): R is not a relay candidate
        # for an uncertified A, and asking anyway is refused by R's hop guard.
        assert a.relay.candidates() == []
        assert await a.relay.reserve(R) is None
        assert a.relay.book.advertised(A) == [] and dialable_addrs(a.host) == []
        assert r.relay.protocol.resource_manager.get_reservation(to_id(A)) is None
        for d in (a, r):
            d.stop()
