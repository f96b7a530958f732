"""A local testnet's plan: which nodes, in which regions, with which keys and ports.

Everything follows from (orgs, regions, seed), so `testnet up --seed 7` builds the same
federation every time (same peer ids, same gene spread). The plan is written to
`DIR/testnet.json`; every other testnet command reads it from there.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gd.genome import canonical
from gd.genome.identity import NodeKey

PLAN_FILE = "testnet.json"
BOOTSTRAP_FILE = "bootstrap-peers.toml"
# Loopback only: the testnet never listens on another interface.
HOST = "127.0.0.1"
MAX_NODES = 64
REGION_NAMES = ("eu-west", "us-east", "ap-south", "sa-east", "af-north", "eu-north")
ORG_NAMES = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell")
VOTERS_PER_REGION = 3


class TestnetError(RuntimeError):
    """The testnet directory is missing, inconsistent or cannot be changed as asked."""

    __test__ = False  # not a pytest test class, despite the name


@dataclass(frozen=True)
class NodePlan:
    name: str
    org: str
    region: str
    port: int
    seed_hex: str
    peer_id: str
    home: str
    voter: bool

    @property
    def addr(self) -> str:
        return f"/ip4/{HOST}/tcp/{self.port}"


@dataclass(frozen=True)
class TestnetPlan:
    __test__ = False  # not a pytest test class, despite the name
    directory: str
    seed: int
    regions: tuple[str, ...]
    nodes: tuple[NodePlan, ...]

    def node(self, name: str) -> NodePlan:
        for node in self.nodes:
            if node.name == name or node.peer_id == name:
                return node
        names = ", ".join(n.name for n in self.nodes)
        raise TestnetError(f"no node {name!r} in this testnet (nodes: {names})")

    def to_plain(self) -> dict[str, Any]:
        return {"directory": self.directory, "seed": self.seed, "regions": list(self.regions),
                "nodes": [asdict(n) for n in self.nodes]}

    @classmethod
    def from_plain(cls, data: dict[str, Any]) -> TestnetPlan:
        return cls(directory=data["directory"], seed=data["seed"],
                   regions=tuple(data["regions"]),
                   nodes=tuple(NodePlan(**n) for n in data["nodes"]))

    def save(self) -> Path:
        path = Path(self.directory) / PLAN_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_plain(), indent=2))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, directory: Path) -> TestnetPlan:
        path = directory / PLAN_FILE
        try:
            return cls.from_plain(json.loads(path.read_text()))
        except FileNotFoundError:
            raise TestnetError(f"{directory} holds no testnet: run `gd-node testnet up` "
                               f"first") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise TestnetError(f"{path} is corrupt: {exc}") from None


def node_seed(seed: int, index: int) -> bytes:
    """Deterministic 32-byte key seed of node `index` in a testnet built from `seed`."""
    return canonical.sha256(canonical.encode(["gd-testnet", seed, index]))


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on loopback (bound then released; the daemons
    take them a moment later, which is fine on a machine running only tests)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def org_name(index: int) -> str:
    """The org of node `index`: acme, globex, ..., then acme-1, globex-1, ..."""
    return ORG_NAMES[index % len(ORG_NAMES)] + ("" if index < len(ORG_NAMES)
                                                else f"-{index // len(ORG_NAMES)}")


def org_names_of_testnets() -> list[str]:
    """Every org name a testnet can hold (up to MAX_NODES nodes). Each node pins the org
    key of all of them when it is created, so a node `testnet join` adds later is
    certified by an org the running nodes already trust: they load their trust anchors
    only when they start, and an uncertified peer is not a region member (issue 13)."""
    return sorted({org_name(i) for i in range(MAX_NODES)})


def region_sizes(orgs: int, regions: int) -> list[int]:
    """How many nodes each region gets: as even as possible, but never two where it can
    be helped. A Raft majority of two voters is both of them, so a two-node region stops
    its ledger when either node is lost, while one of three keeps going (ADR 0006). Each
    pair gives a node to another pair (making 3 + 1), else to a region of three or more."""
    sizes = [orgs // regions + (1 if i < orgs % regions else 0) for i in range(regions)]
    for i in reversed(range(regions)):
        if sizes[i] != 2:
            continue
        pairs = [j for j in range(regions) if j != i and sizes[j] == 2]
        bigger = [j for j in range(regions) if sizes[j] >= 3]
        target = next(iter(pairs or bigger), None)
        if target is not None:
            sizes[i] -= 1
            sizes[target] += 1
    return sizes


def region_layout(orgs: int, regions: int) -> list[int]:
    """The region index of each node: round robin over the regions that still have room
    in `region_sizes`, so the first nodes alternate regions as before."""
    room = region_sizes(orgs, regions)
    layout: list[int] = []
    r = 0
    for _ in range(orgs):
        while room[r % regions] == 0:
            r += 1
        layout.append(r % regions)
        room[r % regions] -= 1
        r += 1
    return layout


def make_plan(directory: Path, *, orgs: int, regions: int, seed: int,
              first_index: int = 0) -> TestnetPlan:
    if not 1 <= orgs <= MAX_NODES:
        raise TestnetError(f"--orgs must be between 1 and {MAX_NODES}")
    if not 1 <= regions <= min(orgs, len(REGION_NAMES)):
        raise TestnetError(f"--regions must be between 1 and {min(orgs, len(REGION_NAMES))}")
    region_names = REGION_NAMES[:regions]
    layout = region_layout(orgs, regions)
    ports = free_ports(orgs)
    nodes = []
    per_region: dict[str, int] = {}
    for i in range(orgs):
        index = first_index + i
        region = region_names[layout[i]]
        per_region[region] = per_region.get(region, 0) + 1
        seed_bytes = node_seed(seed, index)
        org = org_name(index)
        nodes.append(NodePlan(
            name=f"node-{index + 1}", org=org, region=region, port=ports[i],
            seed_hex=seed_bytes.hex(), peer_id=NodeKey.from_seed(seed_bytes).peer_id,
            home=str((directory / f"node-{index + 1}").absolute()),
            voter=per_region[region] <= VOTERS_PER_REGION,
        ))
    return TestnetPlan(str(directory.absolute()), seed, tuple(region_names), tuple(nodes))


def bootstrap_toml(nodes: tuple[NodePlan, ...] | list[NodePlan]) -> str:
    """A bootstrap-peers.toml naming every node (each node skips itself)."""
    out = ["# Generated by `gd-node testnet up`: every node of this testnet.", ""]
    for node in nodes:
        out += ["[[peers]]", f'peer_id = "{node.peer_id}"', f'addrs = ["{node.addr}"]',
                f'region = "{node.region}"', ""]
    return "\n".join(out)
