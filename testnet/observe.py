"""Reading a testnet's state: per node, what its daemon and its Cortex say.

Used by `testnet status` and the live dashboard. A node that is down still reports its
Cortex and ledger size (read-only LMDB works without the daemon), so a killed node's data
stays visible — marked `live=False`: what a down node shows is what it had when it
stopped, and the screens say so instead of passing it off as current.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from gd.ledger.errors import LedgerError
from gd.node.control import ControlError, call
from gd.node.home import Home
from gd.node.net.denylist import DenyListError, load_deny_list
from gd.node.store.cortex import Cortex, CortexError
from gd.node.store.ledger_store import Ledger
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
    # The region's ledger as this node sees it (empty while it is down): its Raft role
    # ("leader", "follower", "learner", "candidate", "pre_candidate", or "solo" for a
    # region of one), the leader it knows, the term and the commit index.
    role: str = ""
    leader: str | None = None
    term: int = 0
    commit: int = 0
    # Peers this node refuses (its deny list: how `testnet partition` cuts the network).
    denied: list[str] = field(default_factory=list)
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        """The daemon answered just now: peers, sync lag, conflicts and role are current.
        Otherwise only what is on disk is known, as of when the node stopped."""
        return self.running and not self.error

    def to_plain(self) -> dict[str, Any]:
        return {**asdict(self), "live": self.live}


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
            view.extra["api_url"] = status.get("api_url") or ""  # the console's home
            if "ledger_status" in status.get("methods", ()):
                ledger = call(home, "ledger_status", timeout=STATUS_TIMEOUT_S)
                view.role = str(ledger.get("role") or ledger.get("mode") or "")
                if node.peer_id in ledger.get("learners", ()):
                    view.role = "learner"  # the Raft core runs a learner as a follower
                view.leader = ledger.get("leader") or None
                view.term = int(ledger.get("term", 0) or 0)
                view.commit = int(ledger.get("commit", 0) or 0)
        except ControlError as exc:
            view.error = str(exc)
    try:
        view.denied = sorted(load_deny_list(home.root))
    except DenyListError as exc:
        view.error = view.error or str(exc)
    try:
        with Cortex.open(home.cortex_path, readonly=True) as cortex:
            stats = cortex.stats()
            view.genes = stats.genes
            view.native = stats.by_status.get("native", 0)
            view.pending = stats.by_status.get("adaptation_pending", 0)
            view.decisions = stats.decisions
            if not view.live:
                view.ledger_height = _ledger_size(cortex)
    except CortexError as exc:
        view.error = view.error or str(exc)
    return view


def _ledger_size(cortex: Cortex) -> int:
    """The ledger size on disk (a node down, or not answering), 0 before its first entry."""
    try:
        return Ledger(cortex.env, readonly=True).size
    except LedgerError:
        return 0


def observe(plan: TestnetPlan) -> list[NodeView]:
    return [observe_node(node) for node in plan.nodes]


def partition_groups(views: list[NodeView]) -> list[list[str]]:
    """The sides of the network cut by deny lists (node names), or [] when nothing is
    cut. Two nodes are on one side when neither refuses the other; a side is a connected
    group of such pairs (what `testnet partition` makes is a set of cliques)."""
    by_peer = {v.peer_id: v for v in views}
    if not any(set(v.denied) & by_peer.keys() for v in views):
        return []
    groups: list[list[str]] = []
    seen: set[str] = set()
    for start in views:
        if start.peer_id in seen:
            continue
        side, todo = [], [start]
        seen.add(start.peer_id)
        while todo:
            v = todo.pop()
            side.append(v)
            for w in views:
                if w.peer_id not in seen and w.peer_id not in v.denied \
                        and v.peer_id not in w.denied:
                    seen.add(w.peer_id)
                    todo.append(w)
        order = {v.peer_id: i for i, v in enumerate(views)}
        groups.append([v.name for v in sorted(side, key=lambda v: order[v.peer_id])])
    return groups


@dataclass(frozen=True)
class RegionLedger:
    """Who leads one region's ledger, as the region's live nodes report it."""

    region: str
    leader: str | None  # node name; None: no live node leads it
    term: int
    commit: int
    live: int  # nodes of the region answering now


def region_ledgers(plan: TestnetPlan, views: list[NodeView]) -> list[RegionLedger]:
    """Per region: the live node that leads its ledger (in the highest term, should a
    cut-off old leader still believe it leads), or None when no live node does."""
    out = []
    for region in plan.regions:
        live = [v for v in views if v.region == region and v.live]
        leaders = sorted((v for v in live if v.role in ("leader", "solo")),
                         key=lambda v: v.term, reverse=True)
        out.append(RegionLedger(
            region, leaders[0].name if leaders else None,
            max((v.term for v in live), default=0), max((v.commit for v in live), default=0),
            len(live)))
    return out


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
