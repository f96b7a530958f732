"""Real-driver counterparts of what `fedsim` found and checks (issue 12 item 6): the
sync and sovereignty services run on trio's mock clock over the simulated gate of
`service_sim_sov`, so these tests fail when the *drivers* (not a re-statement of
them) regress.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import service_sim_fed
import service_sim_sov
import trio
from service_sim import ServiceSimFailure

from gd.genome.gene import Codon, Gene, ShareScope
from gd.genome.identity import NodeKey
from gd.node.config_sections import SyncSettings
from gd.node.domain_settings import parse_domain_settings
from gd.node.net.streams import READ_TIMEOUT_S
from gd.node.store.audit import AUDIT_DB
from gd.node.store.cortex import Cortex
from gd.node.store.sync_store import SyncStore, any_content, resolve_conflict
from gd.protocol.reconcile import ItemSet
from gd.protocol.sovereignty_agreements import Proposal, ProposalKind

DOMAIN = service_sim_sov.DOMAINS[0]


class RevokingReceiver(service_sim_sov.CheckedReceiver):
    """Node 1's receiver view that, right after it accepts the first gene of a pull,
    has its organisation revoke its agreement with the sender (a person acting while
    the pull's group of batches is still being staged)."""

    def __init__(self, view: Any, check: Callable[[Gene, float], None],
                 refused: Callable[[Gene, float], None], net: MidPullRevokeNet) -> None:
        super().__init__(view, check, refused)
        self.net = net

    def accept(self, gene: Gene) -> bool:
        ok = super().accept(gene)
        if ok and not self.net.revoked:
            self.net.revoked = True
            self.net.revoke(self.net.nodes[1], (1, 0, DOMAIN))
        return ok


class MidPullRevokeNet(service_sim_sov.SovNet):
    """No faults: node 0 shares four genes with node 1, which pulls them one batch at a
    time in one group commit and revokes after the first."""

    def __init__(self, seed: int, root: Path) -> None:
        super().__init__(seed, root)
        self.revoked = False
        self.receiver_class = (  # type: ignore[assignment]
            lambda view, check, refused: RevokingReceiver(view, check, refused, self))

    async def main(self) -> None:
        self.faults = False
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            for node in self.nodes:
                self.open(node)
                assert node.sync is not None
                node.sync.settings = SyncSettings(auto=False, compress=False, batch_genes=1)
            a, b = self.nodes[0], self.nodes[1]
            self.share(a, (0, 1, DOMAIN))
            self.share(b, (1, 0, DOMAIN))
            self.meet(a, b)
            await trio.sleep(READ_TIMEOUT_S)  # the agreements are delivered both ways
            for _ in range(4):
                self.write(a, DOMAIN)
            await self.round(b, a, reconcile=False)
            self.check_statuses()  # a gene accepted against the model failed the round
            nursery.cancel_scope.cancel()


def test_each_pulled_batch_is_judged_on_the_policy_it_arrives_under(tmp_path: Path) -> None:
    """fedsim seed 6, on the real `FeedPuller`: a group commit stages several batches
    and the sovereign receiver view snapshots its policy; without `begin_batch()` per
    batch the later batches were judged on the first one's snapshot, so genes arrived
    after the receiver's own revoke."""
    net = MidPullRevokeNet(0, tmp_path)
    service_sim_sov.run(0, tmp_path, lambda seed, root: net)
    assert net.revoked
    b = net.nodes[1]  # run() closed its Cortex: reopen it to read what was committed
    cortex = Cortex.open(b.path)
    try:
        held = [g for g in cortex.genes() if g.origin == net.nodes[0].peer]
    finally:
        cortex.close()
    assert len(held) == 1, [g.id for g in held]


# -- fedsim's conflict workload and invariants on the real services ---------------------

FED_SEEDS = int(os.environ.get("SERVICE_FED_SEEDS", 6))


def _fed_run(seed: int, root: Path, net_class: type[service_sim_fed.FedNet]
             = service_sim_fed.FedNet) -> service_sim_sov.SovSimResult:
    """One run, its LMDB homes on /dev/shm when there is one (else under `root`)."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return service_sim_fed.run(seed, root, net_class)
    with tempfile.TemporaryDirectory(dir=shm) as scratch:
        return service_sim_fed.run(seed, Path(scratch), net_class)


@pytest.mark.parametrize("seed", range(FED_SEEDS))
def test_concurrent_edits_keep_fedsims_invariants_on_the_real_services(
        seed: int, tmp_path: Path) -> None:
    try:
        _fed_run(seed, tmp_path)
    except ServiceSimFailure as exc:
        pytest.fail(f"{exc}\nreplay: python tests/sim/service_sim_fed.py {seed} 1",
                    pytrace=False)


def test_a_fed_seed_replays_bit_for_bit(tmp_path: Path) -> None:
    first = _fed_run(3, tmp_path / "a")
    again = _fed_run(3, tmp_path / "b")
    other = _fed_run(4, tmp_path / "c")
    assert first.trace == again.trace and first.trace_hash == again.trace_hash
    assert other.trace_hash != first.trace_hash


def test_the_fed_runs_meet_every_action_and_outcome(tmp_path: Path) -> None:
    kinds: Counter[str] = Counter()
    for seed in range(16):  # conflicts that outlive a run are rarer than the rest
        kinds.update(_fed_run(seed, tmp_path / str(seed)).stats)
    for kind in ("approve", "edit", "resolve", "forwarded", "write", "share", "revoke",
                 "crash", "fault drop", "fault replay", "fault reset", "fault delay",
                 "partition", "heal", "killed", "lww_losses", "queued_accounted",
                 "settlements_checked", "consent_checked",
                 "flows_checked", "anonymised_in", "listed_items", "listed_own_heads"):
        assert kinds[kind] > 0, kind


class AllLwwNet(service_sim_fed.FedNet):
    """Every domain configured last-writer-wins while the people expect `turbofan` to
    queue: a concurrent edit silently overwrites an acknowledged local write."""

    domain_settings: ClassVar[dict[str, Any]] = parse_domain_settings(
        {"loan": {"conflict": "lww"}, "turbofan": {"conflict": "lww"}})


class AutoApprovingNet(service_sim_fed.FedNet):
    """A receiver that makes every received gene native without a person's approval."""

    def open(self, node: Any) -> None:
        super().open(node)
        desk = node.sov.desk
        node.sync.on_received = lambda sender, genes: [desk.approve(g.id) for g in genes]


class ForgetfulQueueNet(service_sim_fed.FedNet):
    """A conflict queue that loses what it queued once the batch is applied."""

    def open(self, node: Any) -> None:
        super().open(node)
        store = node.sync.store
        apply = store.apply_batches

        def forgetting(*args: Any, **kwargs: Any) -> Any:
            out = apply(*args, **kwargs)
            db = store._conflicts
            store.cortex.write(lambda txn: txn.drop(db, delete=False))
            return out

        store.apply_batches = forgetting


class UnsettledNet(service_sim_fed.FedNet):
    """A store that keeps a queued conflict after a version settling it arrived."""

    def open(self, node: Any) -> None:
        super().open(node)
        node.sync.store._settle_conflicts = lambda txn, incoming: None


class DeafToShares(service_sim_sov.ObservedPolicyStore):
    """Node 0 hears a peer's share (the model notes it) but records it as a revoke, so
    it believes the peer refuses (and only ever sends it less)."""

    def receive_proposal(self, data: bytes, sender: str, **kwargs: Any) -> Any:
        proposal = Proposal.decode(data)
        if proposal.kind is ProposalKind.SHARE and self._node.index == 0:
            self._net.learned(self._node, sender, proposal)
            return self._store.receive_proposal(
                Proposal.create(self._net.by_peer(sender).key, ProposalKind.REVOKE,
                                proposal.peer, proposal.rule, proposal.hlc).encode(),
                sender, **kwargs)
        return super().receive_proposal(data, sender, **kwargs)


class DeafNet(service_sim_fed.FedNet):
    policy_store_class = DeafToShares


class RefusingReceiver(service_sim_sov.CheckedReceiver):
    """An inbound filter that refuses about a quarter of the genes for no reason."""

    def accept(self, gene: Gene) -> bool:
        if gene.id[0] in "0123":
            if self.refused is not None:
                self.refused(gene, self.opened)
            return False
        return super().accept(gene)


class RefusingNet(service_sim_fed.FedNet):
    receiver_class = RefusingReceiver


class TornAuditNet(service_sim_fed.FedNet):
    """A crash that leaves the audit log with a hole (a record written past its end)."""

    def crash(self, node: Any) -> None:
        if node.cortex is not None:
            db = node.cortex.open_db(AUDIT_DB)

            def tear(txn: Any) -> None:
                past = txn.stat(db)["entries"] + 1
                txn.put(past.to_bytes(8, "big"), b"torn", db=db)

            node.cortex.write(tear)
        super().crash(node)


class NamingAllSender(service_sim_sov.CheckedSender):
    """A repair responder that names every version it holds, whatever the policy."""

    def repair_items(self) -> Any:
        items = self.view.repair_items()
        heads = [(g.hlc, g.version_hash) for g in self.view._service.cortex.genes()]
        padded = ItemSet.trusted({*(items[i] for i in range(len(items))), *heads})
        if self.check_items is not None:
            self.check_items(padded)
        return padded


class NamingAllNet(service_sim_fed.FedNet):
    sender_class = NamingAllSender


@pytest.mark.parametrize(("net_class", "message"), [
    (NamingAllNet, "no rule of its own|newest proposal it knows|against its scope"),
    (RefusingNet, "without a reason"),
    (TornAuditNet, "audit log after a crash"),
    (AllLwwNet, "lost its acknowledged write|does not descend"),
    (AutoApprovingNet, "without this node's approval"),
    (ForgetfulQueueNet, "in no conflict queue"),
    (UnsettledNet, "still queues conflict"),
    (DeafNet, "node 0 believes node . refuses"),
])
def test_each_fed_invariant_catches_its_breach(
        net_class: type[service_sim_fed.FedNet], message: str, tmp_path: Path) -> None:
    with pytest.raises(ServiceSimFailure, match=message):
        for seed in range(16):
            _fed_run(seed, tmp_path / str(seed), net_class)


def test_a_queued_version_settles_the_conflicts_it_descends(tmp_path: Path) -> None:
    """service_sim_fed seed 34: node B queued (b2, a2); B edited on (b3); A resolved
    its own (a2, b2) into r, which reached B concurrent with b3 and was queued, while
    (b2, a2), both of whose sides r descends, stayed queued: one gene piled up a
    conflict per version A sent. Queuing r settles what r descends, as storing it does."""
    key_a, key_b = (NodeKey.from_seed(bytes([i]) * 32) for i in (1, 2))
    stores = []
    for name, key in (("a", key_a), ("b", key_b)):
        cortex = Cortex.open(tmp_path / name)
        stores.append(SyncStore(cortex, local_peer=key.peer_id, content_check=any_content))
    at_a, at_b = stores
    try:
        g1 = Gene.create(key_a, domain=DOMAIN, name="rule", action="inspect", hlc=1,
                         codons=[Codon.simple("s11", ">", 1)], scope=ShareScope(forward=True))
        at_a.cortex.put_gene(g1)
        at_b.apply_batch(key_a.peer_id, [g1], None)
        b2 = g1.edited(key_b, hlc=2, codons=(Codon.simple("s11", ">", 2),))
        a2 = g1.edited(key_a, hlc=3, codons=(Codon.simple("s11", ">", 3),))
        at_b.cortex.put_gene(b2)
        at_a.cortex.put_gene(a2)
        assert at_b.apply_batch(key_a.peer_id, [a2], None).queued == 1
        assert at_a.apply_batch(key_b.peer_id, [b2], None).queued == 1
        b3 = b2.edited(key_b, hlc=4, version=at_b.cortex.next_version(g1.id),
                       codons=(Codon.simple("s11", ">", 4),))
        at_b.cortex.put_gene(b3)
        r = resolve_conflict(at_a, key_a, at_a.conflicts()[0].key, "local", None,
                             physical_ms=5)
        assert at_b.apply_batch(key_a.peer_id, [r], None).queued == 1
        left = [(c.local.version_hash, c.remote.version_hash) for c in at_b.conflicts()]
        assert left == [(b3.version_hash, r.version_hash)]
    finally:
        for store in stores:
            store.cortex.close()
