"""Helpers of the API tests: a real daemon (in-process, on 127.0.0.1) with genes in two
domains and tokens of every role; tests talk to it over real HTTP with httpx."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio
from daemon_cluster import launch
from gd_testkit import key_from_int, make_gene

from gd.genome import Gene
from gd.genome.gene import GeneStatus
from gd.motors.domains import get_domain
from gd.node.api.roles import Role
from gd.node.api.settings import ApiSettings
from gd.node.api.tokens import TokenStore
from gd.node.config import MeshSettings, NodeConfig
from gd.node.daemon import Daemon
from gd.node.home import Home
from gd.node.local import initialise_home
from gd.node.store.cortex import Cortex

# Generous: the tests share two cores with other suites.
HTTP_TIMEOUT_S = 30.0


@dataclass
class ApiNode:
    """One running daemon, its genes and a token per role/scope."""

    home: Home
    cortex: Cortex
    daemon: Daemon | None = None
    genes: dict[str, Gene] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    token_ids: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        assert self.daemon is not None and self.daemon.api_url
        return self.daemon.api_url

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.tokens.get(token, token)}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=HTTP_TIMEOUT_S)


def states(domain: str, n: int, seed: int = 7) -> list[dict[str, Any]]:
    return [{"values": dict(s.values), "entity": s.entity, "t": s.t}
            for s in get_domain(domain).demo_states(n, seed)]


TOKEN_SPECS = {
    # name: (role, domains)
    "admin": (Role.ADMIN, ("*",)),
    "viewer": (Role.VIEWER, ("*",)),
    "operator": (Role.OPERATOR, ("*",)),
    "approver": (Role.APPROVER, ("turbofan",)),
    "loan-viewer": (Role.VIEWER, ("loan",)),
    "loan-admin": (Role.ADMIN, ("loan",)),
}


def prepare(root: Path, **api: Any) -> tuple[ApiNode, NodeConfig]:
    home = Home(root / "n1")
    key = key_from_int(1)
    settings = ApiSettings(**{"rate_per_s": 1000.0, "rate_burst": 1000,
                              "webhook_hosts": ("127.0.0.1",), **api})
    cfg = NodeConfig(org="acme", region="eu", api=settings,
                     mesh=MeshSettings(ping_interval_s=5))
    initialise_home(home, cfg, key)
    cortex = Cortex.open(home.cortex_path)
    node = ApiNode(home, cortex)
    own = {"tf": make_gene(key, "inspect-when-hot", "turbofan"),
           "loan": make_gene(key, "decline-low-score", "loan", threshold=600.0)}
    foreign = make_gene(key_from_int(99), "inspect-foreign", "turbofan", threshold=48.0)
    pending = foreign.with_local(status=GeneStatus.ADAPTATION_PENDING)
    pending_loan = make_gene(key_from_int(99), "decline-foreign", "loan",
                             threshold=580.0).with_local(status=GeneStatus.ADAPTATION_PENDING)
    cortex.put_genes([*own.values(), pending, pending_loan])
    node.genes = {**own, "pending": pending, "pending-loan": pending_loan}
    store = TokenStore(cortex)
    for name, (role, domains) in TOKEN_SPECS.items():
        record, secret = store.create(role, domains, label=name)
        node.tokens[name] = secret
        node.token_ids[name] = record.id
    return node, cfg


async def start(nursery: trio.Nursery, node: ApiNode, cfg: NodeConfig) -> ApiNode:
    node.daemon = await launch(nursery, node.home, cfg, key_from_int(1), cortex=node.cortex)
    return node
