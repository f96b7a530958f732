"""fedsim's conflict workload on the real services: `service_sim_sov`'s three
organisations, whose people also approve received genes, edit them and pass them on,
so concurrent versions of one gene meet on the real async drivers; one seed, one run.

Why: `fedsim` re-stated the drivers' sequencing (pull loop, fetch window, deliver-then-
ack, meet/backfill, timeouts) to check what happens when edits cross. This harness adds
that workload to the sovereign service simulation, which runs the drivers themselves
on trio's mock clock over the simulated gate and faulty streams (drops, delays, resets,
replayed and reordered agreement conversations, partitions, crashes mid-round and
right after an apply):

* genes are created forwardable now and then (`ShareScope(forward=True)`); rules that
  do not anonymise allow forwarding, so an approved gene travels on;
* **approve**: a person approves a received gene (`AdaptationDesk.approve`, `native`);
* **edit**: a person edits a native gene, their own or an approved one of another's;
* **resolve**: a person settles a queued conflict (`resolve_conflict`, keep local or
  remote), whose resolution then travels like any edit;
* domain `loan` is configured last-writer-wins (`[domains.loan] conflict = "lww"`), so
  its concurrent edits settle by HLC; `turbofan` queues them (`QUEUE_ALL`).

Invariants: the sovereign ones (loosened for forwarding and edits) and fedsim's: see
`service_sim_fed_checks`. After the run every node restarts, the network heals and
rounds of delivery, pull and reconcile run until nothing changes (quiescence, at most
`MAX_SETTLE_ROUNDS`), then everything is checked.

`python tests/sim/service_sim_fed.py [FIRST [COUNT]]` sweeps seeds.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Final

import service_sim_sov
import trio
from service_sim import EPOCH_MS, ServiceSimFailure
from service_sim_fed_checks import FedInvariants, stamp
from service_sim_sov import ProcessKilled, SovNet, SovNode, SovSimResult

from gd.genome.gene import Codon, Gene, GeneStatus, ShareScope
from gd.node.domain_settings import parse_domain_settings
from gd.node.store.sync_store import Conflict, resolve_conflict
from gd.protocol.policy_rules import ShareRule

MAX_SETTLE_ROUNDS: Final = 10
ACTION_RATE: Final = 0.5  # share of steps that are a person's approve/edit/resolve


class FedNet(FedInvariants, SovNet):
    """`SovNet` plus the people who approve, edit and resolve, and fedsim's model."""

    domain_settings: ClassVar[dict[str, Any]] = parse_domain_settings(
        {"loan": {"conflict": "lww"}})
    steps = 130

    def __init__(self, seed: int, root: Path) -> None:
        super().__init__(seed, root)
        # fewer anonymised pairs than the sovereign sim: those never forward
        self.anon = {p: self.rng.random() < 0.25 for p in sorted(self.anon)}
        self.acked = {n.index: [] for n in self.nodes}
        self.approved = {n.index: set() for n in self.nodes}
        self.resolutions = []
        self.originals = set()

    # -- the workload ------------------------------------------------------------------
    def rule(self, pair: service_sim_sov.Pair) -> ShareRule:
        anon = self.anon[pair]
        return ShareRule(self.subject(pair), pair[2], anonymize=anon, allow_forward=not anon)

    def new_scope(self, node: SovNode) -> ShareScope:
        return ShareScope(forward=self.rng.random() < 0.8)

    def ack(self, node: SovNode, gene: Gene) -> None:
        self.acked[node.index].append((gene.id, gene.version_hash, gene.domain, stamp(gene)))

    def write(self, node: SovNode, domain: str | None = None) -> Gene:
        gene = super().write(node, domain)
        self.originals.add(gene.id)
        self.ack(node, gene)
        return gene

    def act_approve(self, node: SovNode) -> None:
        assert node.sov is not None
        pending = node.sov.desk.pending()
        if not pending:
            return
        gene = self.rng.choice(pending[-3:])  # one of the newest
        approved = node.sov.desk.approve(gene.id)[0]
        self.approved[node.index].add((approved.id, approved.version_hash))
        self.log(f"approve {node.index} {gene.id[:8]} v{gene.version}")

    def act_edit(self, node: SovNode) -> None:
        assert node.cortex is not None
        native = list(node.cortex.genes(status=GeneStatus.NATIVE))
        if not native:
            return
        # Mostly genes that travel (another's, or forwardable): where edits cross.
        shared = [g for g in native if g.origin != node.peer or g.scope.forward]
        self.edit(node, self.rng.choice(shared if shared and self.rng.random() < 0.8
                                        else native))

    def act_contest(self, node: SovNode) -> None:
        """People on two nodes edit the same gene before either hears of the other's
        edit: concurrent versions, queued or settled by LWW where they meet."""
        assert node.cortex is not None
        mine = {g.id: g for g in node.cortex.genes(status=GeneStatus.NATIVE)}
        both = [(other, gene) for other in self.nodes if other is not node and other.up
                for gene in other.cortex.genes(status=GeneStatus.NATIVE)  # type: ignore[union-attr]
                if gene.id in mine]
        if not both:
            return
        other, gene = self.rng.choice(both)
        self.edit(node, mine[gene.id])
        self.edit(other, gene)
        self.stats["contests"] += 1

    def edit(self, node: SovNode, head: Gene) -> None:
        """A person's edit of `head` on `node`, acknowledged once it is stored."""
        assert node.cortex is not None
        edited = head.edited(node.key, hlc=self.tick(node),
                             version=node.cortex.next_version(head.id),
                             codons=(Codon.simple("s11", ">", self.rng.randint(0, 99)),))
        node.cortex.put_gene(edited)
        self.ack(node, edited)
        self.log(f"edit {node.index} {head.id[:8]} v{edited.version}")

    def act_resolve(self, node: SovNode) -> None:
        assert node.sync is not None and node.gate is not None
        conflicts = node.sync.store.conflicts()
        if not conflicts:
            return
        self.resolve(node, self.rng.choice(conflicts))

    def resolve(self, node: SovNode, conflict: Conflict) -> None:
        """A person keeps one side of `conflict`; the resolution is a new local write."""
        assert node.sync is not None and node.gate is not None
        keep = self.rng.choice(("local", "remote"))
        resolved = resolve_conflict(node.sync.store, node.key, conflict.key, keep, None,
                                    physical_ms=EPOCH_MS + int(trio.current_time() * 1000),
                                    clock=node.gate.clock)
        self.ack(node, resolved)
        self.resolutions.append((node.index, resolved.id))
        self.log(f"resolve {node.index} {conflict.key[:12]} keep={keep}")

    async def step(self) -> None:
        if self.rng.random() >= ACTION_RATE:
            await super().step()
        else:
            await trio.sleep(self.rng.uniform(0.0, 1.0))
            up = [n for n in self.nodes if n.up]
            if up:
                node = self.rng.choice(up)
                act = self.rng.choices(("approve", "edit", "resolve", "contest"),
                                      (5, 3, 1, 4))[0]
                action: Callable[[SovNode], None] = getattr(self, "act_" + act)
                action(node)
                self.check_statuses()
        self.check_writes()

    # -- the end -----------------------------------------------------------------------
    async def quiesce(self) -> None:
        """Settling rounds until nothing changes (at most `MAX_SETTLE_ROUNDS`)."""
        before = None
        for _ in range(MAX_SETTLE_ROUNDS):
            await self.settle_round()
            self.stats["settle_rounds"] += 1
            state = self.fingerprint()
            if state == before:
                return
            before = state
        self.fail(f"no quiescence after {MAX_SETTLE_ROUNDS} settling rounds")

    def fingerprint(self) -> list[Any]:
        out: list[Any] = []
        for node in self.nodes:
            assert node.cortex is not None and node.sync is not None
            out.append((sorted((g.id, g.version_hash, g.status.value)
                               for g in node.cortex.genes()),
                        sorted(c.key for c in node.sync.store.conflicts())))
        return out

    async def settle(self) -> None:
        self.faults = False
        self.groups = {}
        await trio.sleep(service_sim_sov.REPAIR_READ_TIMEOUT_S + service_sim_sov.READ_TIMEOUT_S
                         + 45)  # cut streams and replays run out
        for node in self.nodes:
            if not node.up:
                self.restart(node)
        self.log("settle")
        await self.quiesce()
        # One node's people settle most of what it still queues; their resolutions must
        # settle the same conflicts wherever they reach (what is left queued, here and
        # elsewhere, the accounting finds there).
        queued = [n for n in self.nodes if n.sync is not None and n.sync.store.conflicts()]
        self.stats["queued_at_settle"] += len(queued)
        if queued:
            node = self.rng.choice(queued)
            assert node.sync is not None
            for conflict in node.sync.store.conflicts():
                if self.rng.random() < 0.6:  # some stay queued, for the accounting
                    self.resolve(node, conflict)
            await self.quiesce()
        self.check_consent()  # first: a wrong belief would show as a flow missing
        self.final_checks()
        self.check_writes()
        self.log(f"settled {sorted(self.stats.items())}")


def run(seed: int, root: Path, net_class: type[FedNet] = FedNet) -> SovSimResult:
    """One seeded run under `root`; `ServiceSimFailure` when an invariant breaks."""
    return service_sim_sov.run(seed, root, net_class)


def run_seed(seed: int) -> SovSimResult:
    """`run` in a scratch directory of its own on /dev/shm when there is one."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as scratch:
        return run(seed, Path(scratch))


def main(argv: list[str]) -> int:
    """`python tests/sim/service_sim_fed.py [FIRST [COUNT]]`: one line per failing seed,
    a summary with CPU seconds per seed; exit status 1 if any seed failed."""
    first = int(argv[0]) if argv else 0
    count = int(argv[1]) if len(argv) > 1 else 100
    failed = 0
    started = time.process_time()
    for seed in range(first, first + count):
        try:
            run_seed(seed)
        except ServiceSimFailure as exc:
            failed += 1
            print(exc, flush=True)
    spent = time.process_time() - started
    print(f"{count} seeds from {first}: {failed} failed, {spent / count:.3f} CPU s/seed",
          flush=True)
    return 1 if failed else 0


__all__ = ["FedNet", "ProcessKilled", "main", "run", "run_seed"]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
