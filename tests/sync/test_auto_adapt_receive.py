"""Auto-adaptation on receive without reading the genes back (issue 15): the sync commit
hands `AutoAdapter.after_received` the genes it verified (wire form); the adapter checks
in one read which of them are now the gene's pending head and queues exactly those, as
the old per-gene `get_gene` did: not a version superseded since, not one approved, not
one never stored."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from gd_testkit import key_from_int, make_gene

from gd.genome.gene import Gene, GeneStatus
from gd.motors.domains import get_domain
from gd.node.api.auto_adapt_jobs import JobStoreQueue
from gd.node.api.job_store import JobStore
from gd.node.app import decisions as dec
from gd.node.app.auto_adapt import AutoAdapter
from gd.node.app.auto_adapt_settings import AdaptationSettings
from gd.node.config import NodeConfig
from gd.node.home import Home
from gd.node.local import LocalNode, initialise_home, open_local

KEY, PEER = key_from_int(81), key_from_int(82)


@pytest.fixture
def node() -> Iterator[LocalNode]:
    root = Path(tempfile.mkdtemp(prefix="gdrecv", dir="/tmp"))
    home = Home(root / "n1")
    initialise_home(home, NodeConfig(org="acme", region="eu"), KEY)
    try:
        with open_local(home) as local:
            own = make_gene(KEY, "ours", "turbofan")
            local.cortex.put_gene(own)
            for s in get_domain("turbofan").demo_states(12, 3):  # our domain history
                dec.record_experience(local, own.id, s, success=s.values["s11"] > 47.6)
            yield local
    finally:
        shutil.rmtree(root, ignore_errors=True)


def wire(name: str, threshold: float = 40.0) -> Gene:
    """A gene as the sync commit hands it over: verified, status as on the wire."""
    return make_gene(PEER, name, "turbofan", threshold=threshold)


def test_only_pending_heads_are_queued_and_nothing_is_read_back(node, monkeypatch):
    fresh = [wire(f"fresh-{i}", 40.0 + i) for i in range(3)]
    old = wire("superseded")
    newer = old.edited(PEER, hlc=9 << 16, action="overhaul")
    approved = wire("approved")
    never = wire("never-stored")
    pending = GeneStatus.ADAPTATION_PENDING
    node.cortex.put_genes([g.with_local(status=pending) for g in (*fresh, newer)])
    node.cortex.put_gene(approved.with_local(status=GeneStatus.NATIVE))

    def no_read_back(gene_id: str) -> None:
        raise AssertionError(f"read back {gene_id}")

    monkeypatch.setattr(node.cortex, "get_gene", no_read_back)
    jobs = JobStore(node.cortex)
    auto = AutoAdapter(node.cortex, AdaptationSettings(max_per_peer=10), JobStoreQueue(jobs))
    made = auto.after_received(PEER.peer_id, [*fresh, old, approved, never])
    queued = {j.params["auto"]["parent_version_hash"] for j in jobs.list()}
    assert len(made) == 3 and queued == {g.version_hash.hex() for g in fresh}
    assert auto.summary()["received"]["queued"] == 3
    # The version that is the head now is queued when it arrives; a second delivery of
    # any of them queues nothing (once per version, from the book read in one go).
    assert len(auto.after_received(PEER.peer_id, [newer])) == 1
    assert auto.after_received(PEER.peer_id, [*fresh, newer]) == []


def test_the_per_peer_bound_still_counts_every_pending_gene(node):
    jobs = JobStore(node.cortex)
    auto = AutoAdapter(node.cortex, AdaptationSettings(max_per_peer=2), JobStoreQueue(jobs))
    genes = [wire(f"flood-{i}", 40.0 + i) for i in range(5)]
    node.cortex.put_genes([g.with_local(status=GeneStatus.ADAPTATION_PENDING) for g in genes])
    assert len(auto.after_received(PEER.peer_id, genes)) == 2
    counts = auto.summary()["received"]
    assert counts["queued"] == 2 and counts["skipped_peer"] == 3


def test_head_statuses_tell_the_head_from_other_versions(node):
    g = wire("g")
    later = g.edited(PEER, hlc=9 << 16, action="overhaul")
    node.cortex.put_gene(g.with_local(status=GeneStatus.ADAPTATION_PENDING))
    asked = [(g.id, g.version_hash), (g.id, later.version_hash), ("nope", g.version_hash)]
    assert node.cortex.head_statuses(asked) == ["adaptation_pending", None, None]
    node.cortex.put_gene(later.with_local(status=GeneStatus.REJECTED))
    assert node.cortex.head_statuses(asked) == [None, "rejected", None]


def test_a_received_gene_adapts_on_its_own_history_else_on_the_domains(node, monkeypatch):
    """The batch asks once which genes have decisions or experiences here (issue 15): a
    gene with its own history is adapted on it, the others on our domain's history,
    without reading each one's decisions and experiences."""
    from gd.node.app import auto_adapt

    pending = GeneStatus.ADAPTATION_PENDING
    experienced, decided = wire("experienced", 41.0), wire("decided", 42.0)
    strangers = [wire(f"stranger-{i}", 50.0 + i) for i in range(4)]
    node.cortex.put_genes([g.with_local(status=GeneStatus.NATIVE)
                           for g in (experienced, decided)])
    own_states = get_domain("turbofan").demo_states(2, 9)
    for s in own_states:
        dec.record_experience(node, experienced.id, s, success=True)
    dec.evaluate_gene(node, decided.id, own_states[:1], seed=3)
    assert node.cortex.genes_with_history(
        [experienced.id, decided.id, *(g.id for g in strangers), "no-such-gene"]) \
        == {experienced.id, decided.id}
    # Both come back as new pending versions; the strangers arrive for the first time.
    again = [g.edited(PEER, hlc=(9 + i) << 16, action="overhaul")
             for i, g in enumerate((experienced, decided))]
    node.cortex.put_genes([g.with_local(status=pending) for g in (*again, *strangers)])
    read_own: list[str] = []
    real = auto_adapt.history_states

    def counted(cortex, gene):
        read_own.append(gene.id)
        return real(cortex, gene)

    monkeypatch.setattr(auto_adapt, "history_states", counted)
    jobs = JobStore(node.cortex)
    auto = AutoAdapter(node.cortex, AdaptationSettings(max_per_peer=10), JobStoreQueue(jobs))
    counts: list[int] = []
    real_count = node.cortex.experience_count

    def count_read() -> int:
        counts.append(1)
        return real_count()

    monkeypatch.setattr(node.cortex, "experience_count", count_read)
    assert len(auto.after_received(PEER.peer_id, [*again, *strangers])) == 6
    assert sorted(read_own) == sorted([experienced.id, decided.id])
    assert len(counts) == 1  # the experience count is read once for the batch, not a gene
    states = {j.params["auto"]["parent"]: j.params["states"] for j in jobs.list()}

    def values(found: list[dict]) -> list[float]:  # each state by its cycle, sorted
        return sorted(s["values"]["cycle"] for s in found)

    mine = sorted(s.values["cycle"] for s in own_states)
    assert values(states[experienced.id]) == mine
    assert values(states[decided.id]) == [own_states[0].values["cycle"]]
    domain = values(states[strangers[0].id])
    assert len(domain) == 12 and domain != mine
    assert all(states[g.id] == states[strangers[0].id] for g in strangers)
