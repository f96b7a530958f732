"""Finding peers: the Kademlia DHT with region/domain records.

`bootstrap-peers.toml` (`gd.node.net.bootstrap_file`) names the first peers to dial.
From there the DHT (py-libp2p `KadDHT`, server mode) does the rest. Each node *provides*
`/gd/region/<region>` and `/gd/domain/<domain>` for the domains it talks about, and finds
peers of its region with `find_providers` on its region key. Provider records carry no
value (nothing to validate or forge beyond "this peer says it is in region X"); the claim
is checked for real in the signed handshake.

py-libp2p 0.8.1's `find_providers` returns the *local* provider store whenever it holds
anything, and a node that provides its own region key always holds itself, so the
network is never asked. `find_region_peers` therefore asks the closest peers directly
(`_get_providers_from_peer_with_closers`, a private method of the pinned version) and
merges their answers with the local store, deduplicated (it also returns duplicates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID

REGION_KEY_PREFIX = "/gd/region/"
DOMAIN_KEY_PREFIX = "/gd/domain/"
# Provided by `relay = true` nodes, so private nodes find a relay of their region beyond
# their bootstrap file (node/net/relay.py; the relay's signed handshake capability decides).
RELAY_KEY_PREFIX = "/gd/relay/"
# Peers asked directly per lookup: Kademlia's k (20) is more than a region ever needs.
LOOKUP_PEERS = 20
# Bound on one provider query to one peer; the DHT itself uses 10 s, too slow for a tick.
PROVIDER_QUERY_TIMEOUT_S = 3.0


def region_key(region: str) -> str:
    return REGION_KEY_PREFIX + region


def domain_key(domain: str) -> str:
    return DOMAIN_KEY_PREFIX + domain


def relay_key(region: str) -> str:
    return RELAY_KEY_PREFIX + region


def _key_bytes(key: str) -> bytes:
    # KadDHT.provide() turns a string that is neither a CID nor hex into its UTF-8 bytes;
    # ours always start with "/", so they always take that path.
    return key.encode("utf-8")


def new_dht(host: IHost) -> KadDHT:
    """A server-mode DHT: every gd node answers queries (no client-only nodes)."""
    return KadDHT(host, DHTMode.SERVER, enable_random_walk=False)


@dataclass(frozen=True)
class FoundPeer:
    peer_id: str
    addrs: tuple[str, ...]


class Discovery:
    """Region and domain advertisement and lookup over one running `KadDHT`."""

    def __init__(self, host: IHost, dht: KadDHT) -> None:
        self.host = host
        self.dht = dht
        self.local_peer_id = host.get_id().to_base58()

    async def add_peer(self, peer_id: str) -> None:
        """A verified peer joins our routing table (all gd nodes run DHT servers)."""
        await self.dht.add_peer(ID.from_base58(peer_id), skip_server_mode_check=True)

    def remove_peer(self, peer_id: str) -> None:
        self.dht.routing_table.remove_peer(ID.from_base58(peer_id))

    async def advertise(self, region: str, domains: tuple[str, ...] = (), *,
                        relay: bool = False) -> int:
        """Provide our region and domain keys (and the region's relay key when we relay);
        returns how many succeeded."""
        ok = 0
        keys = (region_key(region), *(domain_key(d) for d in domains),
                *((relay_key(region),) if relay else ()))
        for key in keys:
            if await self.dht.provide(key):
                ok += 1
        return ok

    async def find(self, key: str) -> list[FoundPeer]:
        """Providers of `key` other than us: local store plus the closest peers' answers."""
        kb = _key_bytes(key)
        found: dict[str, set[str]] = {}

        def add(infos: list[Any]) -> None:
            for info in infos:
                pid = info.peer_id.to_base58()
                if pid != self.local_peer_id:
                    found.setdefault(pid, set()).update(str(a) for a in info.addrs)

        store = self.dht.provider_store
        add(store.get_providers(kb))
        peers = self.dht.routing_table.find_local_closest_peers(kb, LOOKUP_PEERS)

        async def ask(peer: ID) -> None:
            with trio.move_on_after(PROVIDER_QUERY_TIMEOUT_S):
                try:
                    providers, _closer = await store._get_providers_from_peer_with_closers(
                        peer, kb)
                except Exception:  # a peer's broken answer costs us only its answer
                    return
                add(providers)

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(ask, peer)
        return [FoundPeer(pid, tuple(sorted(addrs))) for pid, addrs in sorted(found.items())]

    async def find_region_peers(self, region: str) -> list[FoundPeer]:
        return await self.find(region_key(region))

    async def find_relays(self, region: str) -> list[FoundPeer]:
        return await self.find(relay_key(region))
