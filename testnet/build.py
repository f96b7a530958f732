"""`testnet up`: lay out the homes of a planned testnet and start its nodes."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gd.genome.identity import NodeKey
from gd.motors.domains import get_domain
from gd.node.app.importer import import_genes
from gd.node.config import NodeConfig
from gd.node.home import Home
from gd.node.local import initialise_home, open_local
from gd.node.services.recorder import LedgerRecorder
from gd.node.store.policy_store import PolicyStore, rule_from_options
from gd.testnet import procs
from gd.testnet.demo import demo_lines, give_demo_history
from gd.testnet.org_keys import certify_node, testnet_trust
from gd.testnet.owner import OWNER_FILE
from gd.testnet.plan import (
    BOOTSTRAP_FILE,
    MAX_NODES,
    NodePlan,
    TestnetError,
    TestnetPlan,
    bootstrap_toml,
    make_plan,
    org_names_of_testnets,
)


def init_node_home(node: NodePlan, plan: TestnetPlan) -> None:
    """Key, config and Cortex of one node (idempotent: an existing home is kept)."""
    home = Home.resolve(node.home)
    if home.is_initialised():
        return
    voters = tuple(n.peer_id for n in plan.nodes if n.voter and n.region == node.region)
    # Every org's key pinned, this node certified by its org (testnet/org_keys.py), so
    # org:/region: rules work here as in a real federation.
    trust = testnet_trust(plan.seed, org_names_of_testnets())
    cfg = NodeConfig(org=node.org, region=node.region, listen=(node.addr,),
                     bootstrap=str(Path(plan.directory) / BOOTSTRAP_FILE),
                     ledger_voters=voters, trusted_orgs=trust)
    initialise_home(home, cfg, NodeKey.from_seed(bytes.fromhex(node.seed_hex)))
    # Auto-adaptation off on testnet nodes: a job per received demo gene made the
    # dashboard's pending counts depend on job timing, and the chaos run's control calls
    # compete with those searches on 2 cores. tests/api/test_auto_adapt_daemon.py and
    # tests/adversarial/test_adapt_flood.py run it on real daemons.
    with home.config_path.open("a", encoding="utf-8") as handle:
        handle.write("\n[adaptation]\nauto = false\n")
    certify_node(Path(plan.directory), plan.seed, node.org, node.region, node.peer_id,
                 home.root)


def spread_demo_genes(plan: TestnetPlan, nodes: list[NodePlan] | None = None) -> dict[str, int]:
    """Give each org a share of the demo genes: node i takes every len(nodes)-th line,
    so every gene has one origin and the federation starts with something to share."""
    nodes = nodes if nodes is not None else list(plan.nodes)
    lines = demo_lines()
    added: dict[str, int] = {}
    for i, node in enumerate(nodes):
        mine = [line for j, line in enumerate(lines) if j % len(nodes) == i] or lines[:1]
        with open_local(Home.resolve(node.home)) as local, tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "genes.jsonl"
            path.write_text("\n".join(mine) + "\n")
            report = import_genes(local.cortex, local.key, path)
            added[node.name] = report.added
    return added


# The demo agreements `testnet up` makes, by node index: (one side, other side, domain).
# Node 1 shares turbofan with node 2 and loan with node 3, so the dashboard shows genes of
# one domain arriving as pending on each partner, and every other pair sharing nothing.
DEMO_AGREEMENTS: tuple[tuple[int, int, str], ...] = ((0, 1, "turbofan"), (0, 2, "loan"))


def make_demo_agreements(plan: TestnetPlan) -> list[tuple[str, str, str]]:
    """Both sides' `share` of each demo agreement (they become effective when the nodes
    meet and exchange the signed proposals). Pairs beyond the plan's size are skipped.
    Returns (node, node, domain) for each agreement made."""
    made = []
    for i, j, domain in DEMO_AGREEMENTS:
        if max(i, j) >= len(plan.nodes):
            continue
        pair = (plan.nodes[i], plan.nodes[j])
        for me, other in (pair, pair[::-1]):
            with open_local(Home.resolve(me.home)) as local:
                store = PolicyStore(local.cortex, local.key, org=local.config.org,
                                    region=local.config.region)
                store.share(rule_from_options(other.peer_id, domain),
                            ledger=LedgerRecorder(local.cortex.env, local.key))
        made.append((pair[0].name, pair[1].name, domain))
    return made


def evaluate_demo_genes(plan: TestnetPlan, *, states_per_gene: int = 16) -> int:
    """Give each node something to have decided: every native gene is evaluated once by
    the motors on its domain's seeded demo states. The decisions are stored, and their
    ledger statements wait in the node's outbox until its region's ledger runs."""
    # The motors load here, not with the CLI (`gd-node run` needs none; ADR 0063).
    from gd.node.app.decisions import evaluate_gene

    count = 0
    for index, node in enumerate(plan.nodes):
        with open_local(Home.resolve(node.home)) as local:
            for gene in list(local.cortex.genes(status="native")):
                pool = get_domain(gene.domain).demo_states(16 * states_per_gene,
                                                           plan.seed * 1000 + index)
                # States where the rule fires: a rule judged where it does not apply is
                # simply vetoed by M_P, which shows nothing of the other motors.
                firing = [s for s in pool
                          if all(c.holds(s.values) for c in gene.codons)][:states_per_gene]
                if firing:
                    count += len(evaluate_gene(local, gene.id, firing, seed=plan.seed,
                                               aggregate=True))
    return count


def testnet_up(directory: Path, *, orgs: int, regions: int, seed: int,
               progress: Callable[[str], Any] | None = None) -> TestnetPlan:
    """Create (or reuse) the testnet in `directory` and start every node. The caller
    holds the directory's owner lock (`gd.testnet.owner`)."""
    say = progress or (lambda message: None)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        plan = TestnetPlan.load(directory)
        running = [n.name for n in plan.nodes if procs.is_running(n)]
        say(f"reusing the testnet in {directory} ({len(plan.nodes)} nodes"
            + (f"; already running, left by an earlier run: {', '.join(running)})"
               if running else ")"))
    except TestnetError:
        if any(p.name != OWNER_FILE for p in directory.iterdir()):
            raise TestnetError(f"{directory} is not empty and holds no testnet") from None
        plan = make_plan(directory, orgs=orgs, regions=regions, seed=seed)
        (directory / BOOTSTRAP_FILE).write_text(bootstrap_toml(plan.nodes))
        for node in plan.nodes:
            init_node_home(node, plan)
        spread_demo_genes(plan)
        # Each org back-tests its genes on its own (seeded, synthetic) record first, so
        # the demo decisions rest on evidence (testnet/demo.py: who has how much).
        learned = give_demo_history([Path(n.home) for n in plan.nodes], plan.seed)
        say(f"imported demo histories: {sum(learned.values())} experiences")
        for a, b, domain in make_demo_agreements(plan):
            say(f"{a} and {b} share {domain}")
        decided = evaluate_demo_genes(plan)
        say(f"took {decided} demo decisions (on the ledger once the nodes run)")
        plan.save()
        say(f"created {len(plan.nodes)} node homes in {directory}")
    for node in plan.nodes:
        pid = procs.start_node(node, plan)
        say(f"{node.name} ({node.org}, {node.region}) up, pid {pid}")
    return plan


def testnet_join(directory: Path, *, org: str | None, region: str | None,
                 seed: int | None = None) -> NodePlan:
    """Add one node to an existing testnet (its bootstrap file lists the others).

    The new node joins its region's ledger as a *learner*: its config names the voters
    the region already has, so the leader adds it (ConfChange ADD_LEARNER) when it hears
    its gossip, and its statements are forwarded to that leader. Making it a voter would
    need every running voter's configuration changed at once; a node naming a voter set
    the others do not share can never elect anyone (issue 13). Only the first node of a
    new region founds that region's ledger as its single voter.
    """
    plan = TestnetPlan.load(directory)
    index = len(plan.nodes)
    if index >= MAX_NODES:
        raise TestnetError(f"a testnet holds at most {MAX_NODES} nodes")
    extra = make_plan(directory, orgs=1, regions=1, seed=plan.seed if seed is None else seed,
                      first_index=index).nodes[0]
    if org is not None and org not in org_names_of_testnets():
        raise TestnetError(
            f"--org {org!r}: the running nodes trust only the testnet's own org names "
            f"(acme, globex, initech, umbrella, hooli, stark, wayne, tyrell, and those "
            f"with -1 .. -7), pinned when they were created; leave --org out, or pick one")
    chosen_region = region or plan.regions[index % len(plan.regions)]
    if not chosen_region.strip() or any(c.isspace() for c in chosen_region):
        raise TestnetError(f"region {chosen_region!r}: a region name has no spaces")
    founders = [n for n in plan.nodes if n.region == chosen_region and n.voter]
    node = NodePlan(name=extra.name, org=org or extra.org, region=chosen_region,
                    port=extra.port, seed_hex=extra.seed_hex, peer_id=extra.peer_id,
                    home=extra.home, voter=not founders)
    regions = plan.regions if chosen_region in plan.regions else (*plan.regions,
                                                                  chosen_region)
    grown = TestnetPlan(plan.directory, plan.seed, regions, (*plan.nodes, node))
    (directory / BOOTSTRAP_FILE).write_text(bootstrap_toml(grown.nodes))
    init_node_home(node, grown)
    grown.save()
    procs.start_node(node, grown)
    return node
