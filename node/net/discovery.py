"""Finding peers: the bootstrap file, and the Kademlia DHT with region/domain records.

`bootstrap-peers.toml` names the first peers to dial:

    [[peers]]
    peer_id = "12D3KooW..."
    addrs = ["/ip4/203.0.113.7/tcp/4001"]
    region = "eu-west"          # optional hint; the handshake's signed claim wins

    [orgs]                      # optional: org keys this node pins (ADR 0008)
    beta = "ed25519:<64 hex>"   # `org:beta` rules match peers beta's key certifies

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

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID

from gd.genome import checks
from gd.genome.certificate import NO_TRUST, TrustAnchors, org_key_text
from gd.genome.errors import ValidationError
from gd.genome.identity import is_peer_id
from gd.node.config import ConfigError, parse_trusted_orgs
from gd.node.errors import BootstrapError

REGION_KEY_PREFIX = "/gd/region/"
DOMAIN_KEY_PREFIX = "/gd/domain/"
# Provided by `relay = true` nodes, so private nodes find a relay of their region beyond
# their bootstrap file (node/net/relay.py; the relay's signed handshake capability decides).
RELAY_KEY_PREFIX = "/gd/relay/"
# Peers asked directly per lookup: Kademlia's k (20) is more than a region ever needs.
LOOKUP_PEERS = 20
# Bound on one provider query to one peer; the DHT itself uses 10 s, too slow for a tick.
PROVIDER_QUERY_TIMEOUT_S = 3.0
MAX_BOOTSTRAP_PEERS = 256
MAX_ADDRS_PER_PEER = 16


@dataclass(frozen=True)
class BootstrapPeer:
    peer_id: str
    addrs: tuple[str, ...]
    region: str | None = None


def parse_bootstrap(data: dict[str, Any], where: str = "bootstrap-peers.toml"
                    ) -> list[BootstrapPeer]:
    unknown = set(data) - {"peers", "orgs"}
    if unknown:
        raise BootstrapError(f"{where}: unknown top-level keys {sorted(unknown)}; "
                             "expected [[peers]] tables and an [orgs] table")
    parse_bootstrap_orgs(data, where)
    entries = data.get("peers", [])
    if not isinstance(entries, list):
        raise BootstrapError(f"{where}: `peers` must be an array of [[peers]] tables")
    if len(entries) > MAX_BOOTSTRAP_PEERS:
        raise BootstrapError(f"{where}: {len(entries)} peers, the limit is {MAX_BOOTSTRAP_PEERS}")
    out: list[BootstrapPeer] = []
    for i, entry in enumerate(entries):
        at = f"{where}: peers[{i}]"
        if not isinstance(entry, dict):
            raise BootstrapError(f"{at}: not a table")
        extra = set(entry) - {"peer_id", "addrs", "region"}
        if extra:
            raise BootstrapError(f"{at}: unknown keys {sorted(extra)}")
        pid = entry.get("peer_id")
        if not isinstance(pid, str) or not is_peer_id(pid):
            raise BootstrapError(f"{at}: peer_id {pid!r} is not an Ed25519 peer id (12D3KooW...)")
        addrs = entry.get("addrs")
        if (not isinstance(addrs, list) or not addrs or len(addrs) > MAX_ADDRS_PER_PEER
                or not all(isinstance(a, str) and a.startswith("/") for a in addrs)):
            raise BootstrapError(f"{at}: addrs must be 1..{MAX_ADDRS_PER_PEER} multiaddrs "
                                 "such as \"/ip4/192.0.2.1/tcp/4001\"")
        for a in addrs:
            if "/p2p/" in a and not a.endswith("/p2p/" + pid):
                raise BootstrapError(f"{at}: address {a} names a different peer id")
        region = entry.get("region")
        if region is not None:
            try:
                checks.slug(f"{at}.region", region)
            except ValidationError as exc:
                raise BootstrapError(str(exc)) from None
        out.append(BootstrapPeer(pid, tuple(addrs), region))
    return out


def parse_bootstrap_orgs(data: dict[str, Any], where: str = "bootstrap-peers.toml"
                         ) -> TrustAnchors:
    """The file's [orgs] table: org keys pinned exactly as `[trust] orgs` in config.toml
    (the bootstrap file is one the operator chose and named in the config)."""
    if "orgs" not in data:
        return NO_TRUST
    try:
        return parse_trusted_orgs(data["orgs"], f"{where}: orgs")
    except ConfigError as exc:
        raise BootstrapError(str(exc)) from None


def load_bootstrap(path: Path) -> list[BootstrapPeer]:
    return parse_bootstrap(_read_bootstrap(path), str(path))


def load_bootstrap_orgs(path: Path) -> TrustAnchors:
    """The org keys a bootstrap file pins (none when it has no [orgs] table)."""
    return parse_bootstrap_orgs(_read_bootstrap(path), str(path))


def _read_bootstrap(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BootstrapError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BootstrapError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BootstrapError(f"{path}: not valid TOML: {exc}") from None


def render_bootstrap(peers: list[BootstrapPeer], orgs: TrustAnchors = NO_TRUST) -> str:
    """A bootstrap file for `peers`, pinning `orgs` (what testnets and docs write)."""
    lines = ["# gd-node bootstrap peers: one [[peers]] table per peer.", ""]
    if orgs:
        lines += ["# Org keys every node using this file trusts (docs/adr/0008).", "[orgs]"]
        for name, keys in sorted(orgs.orgs.items()):
            quoted = name.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'"{quoted}" = [' + ", ".join(f'"{org_key_text(k)}"' for k in sorted(keys))
                         + "]")
        lines.append("")
    for p in peers:
        lines += ["[[peers]]", f'peer_id = "{p.peer_id}"',
                  "addrs = [" + ", ".join(f'"{a}"' for a in p.addrs) + "]"]
        if p.region:
            lines.append(f'region = "{p.region}"')
        lines.append("")
    return "\n".join(lines)


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
