"""The real async sync service between two in-process nodes, on trio's mock clock, a
simulated gate and faulty in-memory streams, with crashes (cancel + reopen the Cortex);
one seed gives one run, bit for bit (see service_sim.py and docs/simulation.md).

`SERVICE_SEEDS=N` runs N seeds (default 20: a few seconds). The second half runs
`service_sim_sov`: the sync and sovereignty services of three organisations that share
and revoke domains under drops, replays, partitions and crashes (`SERVICE_SOV_SEEDS`,
default 6; `python tests/sim/service_sim_sov.py FIRST COUNT` sweeps many).
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import service_sim  # tests/sim is on pytest's pythonpath
import service_sim_sov

from gd.genome.gene import Gene
from gd.node.store.policy_store import MARKS_DB
from gd.protocol.sovereignty_agreements import Proposal, ProposalKind

SEEDS = int(os.environ.get("SERVICE_SEEDS", 20))


@pytest.mark.parametrize("seed", range(SEEDS))
def test_the_sync_service_keeps_its_invariants_under_faults(seed: int, tmp_path: Path
                                                            ) -> None:
    try:
        service_sim.run(seed, tmp_path)
    except service_sim.ServiceSimFailure as exc:
        pytest.fail(str(exc), pytrace=False)


def test_a_seed_replays_bit_for_bit(tmp_path: Path) -> None:
    first = service_sim.run(5, tmp_path / "a")
    again = service_sim.run(5, tmp_path / "b")
    other = service_sim.run(6, tmp_path / "c")
    assert first.trace == again.trace and first.trace_hash == again.trace_hash
    assert other.trace_hash != first.trace_hash


def test_the_runs_cut_streams_delay_and_crash(tmp_path: Path) -> None:
    kinds: Counter[str] = Counter()
    for seed in range(8):
        result = service_sim.run(seed, tmp_path / str(seed))
        kinds.update(result.kinds)
        kinds.update(line.split()[1] + " " + line.split()[2] for line in result.trace
                     if " fault " in line)
    for kind in ("fault reset", "fault delay", "crash", "crash-mid-round", "restart",
                 "round", "write", "settled"):
        assert kinds[kind] > 0, kind


class LosingNet(service_sim.Net):
    """A receiver whose store drops the last gene of every batch yet keeps the
    checkpoint (and never reconciles, which would hide the loss)."""

    def open(self, node: Any) -> None:
        super().open(node)
        store = node.svc.store
        apply = store.apply_batches  # apply_batch and the puller's group commit

        def lossy(batches: Sequence[tuple[str, Sequence[Gene], int | None]]) -> Any:
            return apply([(sender, list(genes)[:-1], upto)
                          for sender, genes, upto in batches])

        store.apply_batches = lossy
        self.reconcile_rate = 0.0


class CorruptingNet(service_sim.Net):
    """A network that flips a byte of a frame now and then (the peers stay honest)."""

    def __init__(self, seed: int, root: Path) -> None:
        super().__init__(seed, root)
        self.corrupt_rate = 0.2


def test_a_receiver_that_loses_genes_is_caught(tmp_path: Path) -> None:
    with pytest.raises(service_sim.ServiceSimFailure, match="not converged"):
        for seed in range(5):
            service_sim.run(seed, tmp_path / str(seed), net_class=LosingNet)


def test_a_peer_scored_for_the_network_s_damage_is_reported(tmp_path: Path) -> None:
    """The honest-peer check has teeth: garbage on the wire is scored, and that fails."""
    with pytest.raises(service_sim.ServiceSimFailure, match="honest"):
        for seed in range(5):
            service_sim.run(seed, tmp_path / str(seed), net_class=CorruptingNet)


# -- the sovereign run: sync and sovereignty services of three orgs (service_sim_sov.py) --

# `make sim` sets SERVICE_SEEDS: up to 200 seeds of the sovereign run come with it (each
# costs ~0.35 s on a quiet core; large sweeps belong in tests/sim/sweep.py's pool).
SOV_SEEDS = int(os.environ.get("SERVICE_SOV_SEEDS", min(SEEDS, 200)
                               if "SERVICE_SEEDS" in os.environ else 6))


def _sov_run(seed: int, root: Path, net_class: type[service_sim_sov.SovNet]
             = service_sim_sov.SovNet) -> service_sim_sov.SovSimResult:
    """One sovereign run, its three LMDB homes on /dev/shm when there is one (a commit's
    msync is most of a seed's cost on disk: ~2 s against ~0.35 s), else under `root`."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return service_sim_sov.run(seed, root, net_class)
    with tempfile.TemporaryDirectory(dir=shm) as scratch:
        return service_sim_sov.run(seed, Path(scratch), net_class)


@pytest.mark.parametrize("seed", range(SOV_SEEDS))
def test_the_sovereign_services_keep_their_invariants_under_faults(seed: int,
                                                                   tmp_path: Path) -> None:
    try:
        _sov_run(seed, tmp_path)
    except service_sim.ServiceSimFailure as exc:
        pytest.fail(str(exc), pytrace=False)


def test_a_sovereign_seed_replays_bit_for_bit(tmp_path: Path) -> None:
    first = _sov_run(4, tmp_path / "a")
    again = _sov_run(4, tmp_path / "b")
    other = _sov_run(5, tmp_path / "c")
    assert first.trace == again.trace and first.trace_hash == again.trace_hash
    assert other.trace_hash != first.trace_hash


def test_the_sovereign_runs_meet_every_fault_and_action(tmp_path: Path) -> None:
    kinds: Counter[str] = Counter()
    for seed in range(6):
        kinds.update(_sov_run(seed, tmp_path / str(seed)).stats)
    for kind in ("fault drop", "fault replay", "replayed", "fault reset", "fault delay",
                 "timeout", "partition", "heal", "crash", "crash-mid-round", "restart",
                 "killed",
                 "share", "revoke", "write", "round", "sent", "anonymised_in",
                 "converged_pairs", "settled"):
        assert kinds[kind] > 0, kind


class DeafToRevokes(service_sim_sov.ObservedPolicyStore):
    """A node that hears a peer's revoke (the model notes it) but never applies it."""

    def receive_proposal(self, data: bytes, sender: str, **kwargs: Any) -> Any:
        proposal = Proposal.decode(data)
        if proposal.kind is ProposalKind.REVOKE:
            self._net.learned(self._node, sender, proposal)
            return self._store.receive_proposal(
                Proposal.create(self._net.by_peer(sender).key, ProposalKind.SHARE,
                                proposal.peer, proposal.rule, proposal.hlc).encode(),
                sender, **kwargs)
        return super().receive_proposal(data, sender, **kwargs)


class DeafNet(service_sim_sov.SovNet):
    policy_store_class = DeafToRevokes


class ForgetfulMarks(service_sim_sov.ObservedPolicyStore):
    """A store that forgets which proposal stamps it applied: a replayed (late) share
    then undoes the revoke that followed it."""

    def receive_proposal(self, data: bytes, sender: str, **kwargs: Any) -> Any:
        marks = self._store.dbs[MARKS_DB]
        self._store.cortex.write(lambda txn: txn.drop(marks, delete=False))
        return super().receive_proposal(data, sender, **kwargs)


class ReplayedNet(service_sim_sov.SovNet):
    policy_store_class = ForgetfulMarks

    def __init__(self, seed: int, root: Path) -> None:
        super().__init__(seed, root)
        self.replay_rate = 1.0


class LeakyNet(service_sim_sov.SovNet):
    """Shares in clear what the organisation asked to anonymise."""

    def share(self, node: Any, pair: Any) -> None:
        anon = self.anon[pair]
        self.anon[pair] = False
        super().share(node, pair)
        self.anon[pair] = anon


class ApprovingNet(service_sim_sov.SovNet):
    """A receiver that makes every received gene native without a person's approval."""

    def open(self, node: Any) -> None:
        super().open(node)
        desk = node.sov.desk
        node.sync.on_received = lambda sender, genes: [desk.approve(g.id) for g in genes]


class UnauditedSender(service_sim_sov.CheckedSender):
    def finish_batch(self, extra: Sequence[Gene] = ()) -> int:
        self.view._filter.take_sent()  # the batch is done, and nothing written
        return 0


class UnauditedNet(service_sim_sov.SovNet):
    sender_class = UnauditedSender


class StingySender(service_sim_sov.CheckedSender):
    """Never sends the loan domain, whatever the agreements say."""

    def policy(self, receiver: str, gene: Gene) -> bool:
        return gene.domain != "loan" and super().policy(receiver, gene)

    def outgoing(self, gene: Gene) -> Gene | None:
        return None if gene.domain == "loan" else super().outgoing(gene)


class StingyNet(service_sim_sov.SovNet):
    sender_class = StingySender


class AgreementsOffTheLedger:
    """A ledger sink that records revocations and drops agreements."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink

    def append(self, kind: str, payload_hash: bytes, summary: dict[str, Any],
               idempotency_key: str) -> object:
        if kind == "agreement":
            return None
        return self.sink.append(kind, payload_hash, summary, idempotency_key)


class UnrecordedNet(service_sim_sov.SovNet):
    def open(self, node: Any) -> None:
        super().open(node)
        node.sov.ledger = AgreementsOffTheLedger(node.sov.ledger)


@pytest.mark.parametrize(("net_class", "message"), [
    (DeafNet, "newest proposal it knows"),
    (ReplayedNet, "newest proposal it knows"),
    (LeakyNet, "is not an original|carries"),
    (ApprovingNet, "is native"),
    (UnauditedNet, "no gene_sent record"),
    (StingyNet, "not converged"),
    (UnrecordedNet, "not on its ledger"),
])
def test_each_sovereign_invariant_catches_its_breach(
        net_class: type[service_sim_sov.SovNet], message: str, tmp_path: Path) -> None:
    with pytest.raises(service_sim.ServiceSimFailure, match=message):
        for seed in range(12):
            _sov_run(seed, tmp_path / str(seed), net_class)


def test_a_stream_cut_during_pipelined_repair_fetches_is_a_cut(tmp_path: Path) -> None:
    """Regression: seeds 0 and 2 cut a reconcile stream while its fetches were in flight;
    `repair_fetch.fetch_all` raised the nursery's ExceptionGroup, which `guard_round`
    logged as a local failure (`sync.failed`) instead of a cut stream."""
    for seed in (0, 2):
        _sov_run(seed, tmp_path / str(seed))


class PausingNet(service_sim_sov.SovNet):
    """Every writer is descheduled right after its bytes leave (a crash may land there)."""

    def __init__(self, seed: int, root: Path) -> None:
        super().__init__(seed, root)
        self.pause_rate = 1.0


@pytest.mark.parametrize("seed", [142, 144])
def test_a_server_crashing_right_after_a_batch_keeps_its_gene_sent_records(
        seed: int, tmp_path: Path) -> None:
    """Regression: the feed server audited a batch (`gene_sent`) only after sending it, so
    a crash in between left the receiver holding genes the sender had no record of giving
    it (a later `genes forget` would not tombstone them there). It audits first now."""
    try:
        _sov_run(seed, tmp_path, PausingNet)
    except service_sim.ServiceSimFailure as exc:
        pytest.fail(str(exc), pytrace=False)


class KilledAfterApplyNet(service_sim_sov.SovNet):
    """The process dies right after many a received batch's apply transaction."""

    def __init__(self, seed: int, root: Path) -> None:
        super().__init__(seed, root)
        self.kill_rate = 0.3


class AuditAfterTheApply(service_sim_sov.CheckedReceiver):
    """The receiver view as it was before ADR 0040: no `audit_in`, so the records are
    written in a transaction after the apply's."""

    def __getattr__(self, name: str) -> Any:
        if name == "audit_in":
            raise AttributeError(name)
        return super().__getattr__(name)


class KilledAfterApplyOldAuditNet(KilledAfterApplyNet):
    receiver_class = AuditAfterTheApply


def test_a_kill_right_after_a_received_apply_keeps_its_gene_received_records(
        tmp_path: Path) -> None:
    """Regression (ADR 0037, fixed by ADR 0040): a received batch was applied in one
    transaction and audited in the next, so a kill between them kept the genes and lost
    their records. The kill lands right after the apply commits; with the audit after
    the apply (the old view) the same kills are caught."""
    for seed in range(6):
        try:
            _sov_run(seed, tmp_path, KilledAfterApplyNet)
        except service_sim.ServiceSimFailure as exc:
            pytest.fail(str(exc), pytrace=False)
    with pytest.raises(service_sim.ServiceSimFailure, match="no gene_received"):
        for seed in range(6):
            _sov_run(seed, tmp_path, KilledAfterApplyOldAuditNet)


def test_a_node_killed_in_the_middle_of_a_frame_is_not_scored_as_a_protocol_error(
        tmp_path: Path) -> None:
    """Regression, seed 14759 (a sweep of 8,800 sovereign seeds): node 2 was killed while
    a send of its pull was part-way out; its task's `finally` ended the stream cleanly,
    so node 0 read a clean end inside a frame and scored an honest peer for a protocol
    error. A FramedStream whose send was cut off (or is still under way) now resets on
    close (node/net/streams.py), and the reader takes a reset, or a connection shutting
    down, as a gone stream."""
    try:
        service_sim_sov.run(14759, tmp_path)
    except service_sim.ServiceSimFailure as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.mark.parametrize("seed", [435, 483])
def test_a_crash_during_a_rounds_commit_blames_no_later_life(seed: int, tmp_path: Path
                                                             ) -> None:
    """Seeds 435 and 483 (the final sweep): a node crashed while its pull committed; the
    round's shielded commit of staged batches then met the Cortex the crash had closed
    and the dead life logged a local failure, which the harness blamed on the node. A
    killed process logs nothing, and a daemon closes its Cortex only after its tasks end,
    so only a round of the node's current life may fail the run."""
    try:
        service_sim.run(seed, tmp_path)
    except service_sim.ServiceSimFailure as exc:
        pytest.fail(str(exc), pytrace=False)
