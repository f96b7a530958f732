"""Reading a testnet's state: per node, what its daemon and its Cortex say.

Used by `testnet status` and the live dashboard. A node that is down still reports its
Cortex (read-only LMDB works without the daemon), so a killed node's data stays visible.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from gd.node.control import ControlError, call
from gd.node.cortex import Cortex, CortexError
from gd.node.home import Home
from gd.testnet import procs
from gd.testnet.plan import NodePlan, TestnetPlan

# The dashboard polls every node each refresh; a stuck daemon must not freeze it.
STATUS_TIMEOUT_S = 2.0


@dataclass
class NodeView:
    name: str
    org: str
    region: str
    peer_id: str
    running: bool
    pid: int | None = None
    peers: int = 0
    native: int = 0
    pending: int = 0
    genes: int = 0
    ledger_height: int = 0
    sync_lag: int = 0
    conflicts: int = 0
    decisions: int = 0
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_plain(self) -> dict[str, Any]:
        return asdict(self)


def observe_node(node: NodePlan) -> NodeView:
    view = NodeView(node.name, node.org, node.region, node.peer_id, running=False)
    view.pid = procs.node_pid(node)
    view.running = view.pid is not None
    home = Home.resolve(node.home)
    if view.running:
        try:
            status = call(home, "status", timeout=STATUS_TIMEOUT_S)
            view.peers = int(status.get("peers", 0))
            view.ledger_height = int(status.get("ledger_height", 0))
            view.sync_lag = int(status.get("sync_lag", 0) or 0)
            view.conflicts = int(status.get("conflicts", 0) or 0)
        except ControlError as exc:
            view.error = str(exc)
    try:
        with Cortex.open(home.cortex_path, readonly=True) as cortex:
            stats = cortex.stats()
            view.genes = stats.genes
            view.native = stats.by_status.get("native", 0)
            view.pending = stats.by_status.get("adaptation_pending", 0)
            view.decisions = stats.decisions
    except CortexError as exc:
        view.error = view.error or str(exc)
    return view


def observe(plan: TestnetPlan) -> list[NodeView]:
    return [observe_node(node) for node in plan.nodes]


@dataclass(frozen=True)
class DecisionView:
    node: str
    gene: str
    domain: str
    verdict: str
    band: str
    cp: float
    decided_at: int


# The dashboard reads at most this many decisions per node per refresh: the demo holds a
# handful, and a node that evaluated millions must not stall the screen.
MAX_DECISIONS_SCANNED = 2000


def recent_decisions(plan: TestnetPlan, limit: int = 6) -> list[DecisionView]:
    """The latest decisions across the testnet (newest first), read from each Cortex."""
    out: list[DecisionView] = []
    for node in plan.nodes:
        try:
            with Cortex.open(Home.resolve(node.home).cortex_path, readonly=True) as cortex:
                for i, decision in enumerate(cortex.decisions()):
                    if i >= MAX_DECISIONS_SCANNED:
                        break
                    gene = cortex.get_gene(decision.gene_id)
                    out.append(DecisionView(node.name, gene.name if gene else decision.gene_id,
                                            decision.domain, decision.verdict, decision.band,
                                            decision.cp, decision.decided_at))
        except CortexError:
            continue
    out.sort(key=lambda d: d.decided_at, reverse=True)
    return out[:limit]
