"""Auto-adaptation's book (gd.node.app.auto_adapt) on a real Cortex and the API's real job
store, without a daemon: which decisions and received genes queue a job, the bounds,
the settings, and the adaptation rate once jobs end."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from gd_testkit import key_from_int, make_gene

from gd.genome.gene import GeneStatus
from gd.motors.domains import get_domain
from gd.node.api.auto_adapt_jobs import JobStoreQueue
from gd.node.api.job_store import JobStore
from gd.node.app import decisions as dec
from gd.node.app.auto_adapt import AutoAdapter, adaptation_rate
from gd.node.app.auto_adapt_settings import (
    AdaptationSettings,
    AdaptationSettingsError,
    parse_adaptation_settings,
)
from gd.node.config import ConfigError, NodeConfig, parse_config
from gd.node.home import Home
from gd.node.local import LocalNode, initialise_home, open_local

KEY = key_from_int(1)
PEER_A, PEER_B = key_from_int(50), key_from_int(51)


@pytest.fixture
def node() -> Iterator[LocalNode]:
    root = Path(tempfile.mkdtemp(prefix="gdauto", dir="/tmp"))
    home = Home(root / "n1")
    initialise_home(home, NodeConfig(org="acme", region="eu"), KEY)
    try:
        with open_local(home) as local:
            yield local
    finally:
        shutil.rmtree(root, ignore_errors=True)


def adapter(node: LocalNode, **settings: object) -> tuple[AutoAdapter, JobStore]:
    jobs = JobStore(node.cortex)
    return AutoAdapter(node.cortex, AdaptationSettings(**settings), JobStoreQueue(jobs)), jobs


def vetoed_gene(node: LocalNode, name: str, threshold: float = 47.6):
    gene = make_gene(KEY, name, "turbofan", threshold=threshold)
    node.cortex.put_gene(gene)
    made = dec.evaluate_gene(node, gene.id, get_domain("turbofan").demo_states(40, 7), seed=1)
    assert any(d.band == "vetoed" for d in made)
    return gene, made


def test_a_veto_queues_one_adapt_job_per_gene_version_with_lineage(node):
    auto, jobs = adapter(node)
    gene, made = vetoed_gene(node, "inspect-when-hot")
    first = auto.after_decisions(made)
    again = auto.after_decisions(made)  # the same veto seen twice (and a later one)
    assert len(first) == 1 and again == []
    job = jobs.require(first[0])
    assert (job.kind, job.gene_id, job.state, job.actor) == (
        "adapt", gene.id, "queued", "auto-adapt:veto")
    assert job.params["auto"]["parent_version_hash"] == gene.version_hash.hex()
    assert job.params["states"]  # the gene's own history, fixed in the job for a resume
    assert auto.summary()["veto"]["queued"] == 1 and auto.summary()["open_jobs"] == 1


def test_needs_evidence_and_approvals_queue_nothing(node):
    auto, jobs = adapter(node)
    _, made = vetoed_gene(node, "inspect-when-hot")
    calm = [d for d in made if d.band != "vetoed"]
    assert calm and {d.band for d in calm} <= {"needs-evidence", "candidate", "approved"}
    assert auto.after_decisions(calm) == [] and jobs.list() == []


def test_at_most_max_queued_auto_jobs_at_once(node):
    auto, jobs = adapter(node, max_queued=1)
    _, a = vetoed_gene(node, "inspect-a")
    _, b = vetoed_gene(node, "inspect-b", threshold=47.7)
    assert len(auto.after_decisions(a)) == 1
    assert auto.after_decisions(b) == []
    assert auto.summary()["veto"]["skipped_cap"] == 1 and len(jobs.list()) == 1


def received(n: int, key, prefix: str):
    return [make_gene(key, f"{prefix}-{i}", "turbofan", threshold=40.0 + i).with_local(
        status=GeneStatus.ADAPTATION_PENDING) for i in range(n)]


def test_received_genes_are_bounded_per_sending_peer(node):
    auto, jobs = adapter(node, max_per_peer=3)
    own = make_gene(KEY, "ours", "turbofan")
    node.cortex.put_gene(own)
    for s in get_domain("turbofan").demo_states(12, 3):  # our domain history
        dec.record_experience(node, own.id, s, success=s.values["s11"] > 47.6)
    flood = received(10, PEER_A, "flood")
    node.cortex.put_genes(flood)
    assert len(auto.after_received(PEER_A.peer_id, flood[:6])) == 3
    assert auto.after_received(PEER_A.peer_id, flood[6:]) == []  # the bound holds across calls
    other = received(1, PEER_B, "fine")
    node.cortex.put_genes(other)
    assert len(auto.after_received(PEER_B.peer_id, other)) == 1  # another peer is not starved
    summary = auto.summary()["received"]
    assert summary["queued"] == 4 and summary["skipped_peer"] == 7
    assert sorted(j.params["auto"]["peer"] for j in jobs.list()) == sorted(
        [PEER_A.peer_id] * 3 + [PEER_B.peer_id])
    # A gene we did not store (refused, or a conflict queued) is not adapted.
    assert auto.after_received(PEER_B.peer_id, received(1, PEER_B, "never-stored")) == []


def test_a_received_gene_without_any_history_here_queues_nothing(node):
    auto, jobs = adapter(node)
    genes = received(2, PEER_A, "lonely")
    node.cortex.put_genes(genes)
    assert auto.after_received(PEER_A.peer_id, genes) == [] and jobs.list() == []
    assert auto.summary()["received"]["no_history"] == 2


def test_the_domain_history_is_read_once_per_change_not_once_per_synced_batch(
        node, monkeypatch):
    # Reading a domain's history walks every gene of the domain: doing it for each
    # synced batch made a 100k-gene cold sync quadratic (found by `make bench`).
    from gd.node.app import auto_adapt

    reads: list[str] = []
    real = auto_adapt.domain_states

    def counted(cortex, gene):
        reads.append(gene.domain)
        return real(cortex, gene)

    monkeypatch.setattr(auto_adapt, "domain_states", counted)
    auto, _ = adapter(node)
    for n in range(4):  # four batches from a peer, no history here
        batch = received(2, PEER_A, f"batch{n}")
        node.cortex.put_genes(batch)
        auto.after_received(PEER_A.peer_id, batch)
    assert reads == ["turbofan"]
    own = make_gene(KEY, "ours", "turbofan")
    node.cortex.put_gene(own)
    state = get_domain("turbofan").demo_states(1, 3)[0]
    dec.record_experience(node, own.id, state, success=True)  # the history changed
    later = received(1, PEER_A, "later")
    node.cortex.put_genes(later)
    assert len(auto.after_received(PEER_A.peer_id, later)) == 1
    assert reads == ["turbofan", "turbofan"]


def test_the_rate_counts_vetoed_genes_whose_job_found_an_improving_variant(node):
    auto, jobs = adapter(node)
    _, a = vetoed_gene(node, "inspect-a")
    _, b = vetoed_gene(node, "inspect-b", threshold=47.7)
    ja, jb = auto.after_decisions(a) + auto.after_decisions(b)
    assert auto.summary()["rate"] is None  # nothing adapted yet
    jobs.update(ja, lambda j: dataclasses.replace(
        j, state="succeeded", result={"variants": ["g1"], "existing": []}))
    jobs.update(jb, lambda j: dataclasses.replace(
        j, state="succeeded", result={"variants": [], "existing": []}))
    summary = auto.summary()
    assert summary["veto"]["adapted"] == 2 and summary["veto"]["improved"] == 1
    assert summary["rate"] == 0.5 and summary["open_jobs"] == 0
    assert auto.after_decisions(a) == []  # adapted once: not again for this version


def test_adaptation_rate_is_improved_over_adapted():
    assert adaptation_rate({"adapted": 0, "improved": 0}) is None
    assert adaptation_rate({"adapted": 4, "improved": 1}) == 0.25


def test_settings_refuse_unknown_keys_and_bad_values():
    assert parse_adaptation_settings({"auto": False, "max_queued": 3}).max_queued == 3
    with pytest.raises(AdaptationSettingsError, match="max_queue: unknown key"):
        parse_adaptation_settings({"max_queue": 3})
    with pytest.raises(AdaptationSettingsError, match="max_per_peer: expected an integer"):
        parse_adaptation_settings({"max_per_peer": 0})
    with pytest.raises(AdaptationSettingsError, match="auto: expected true or false"):
        parse_adaptation_settings({"auto": "yes"})


def test_auto_false_queues_nothing(node):
    auto, jobs = adapter(node, auto=False)
    _, made = vetoed_gene(node, "inspect-when-hot")
    assert auto.after_decisions(made) == [] and jobs.list() == []


def test_config_toml_refuses_an_unknown_adaptation_key():
    base = {"node": {"org": "acme", "region": "eu"}}
    assert parse_config({**base, "adaptation": {"max_queued": 5}}).adaptation.max_queued == 5
    assert parse_config(base).adaptation == AdaptationSettings()
    with pytest.raises(ConfigError, match=r"config: \[adaptation\] max_queue: unknown key"):
        parse_config({**base, "adaptation": {"max_queue": 5}})


def test_the_per_peer_day_reads_the_injected_clock(node):
    """The 24-hour bound per sending peer is measured on the clock the daemon injects
    (its gate's), so a simulation on a manual clock sees the window roll over."""
    from gd.crdt.clock import ManualClock

    clock = ManualClock(wall=1_700_000_000.0)
    auto = AutoAdapter(node.cortex, AdaptationSettings(max_per_peer=2),
                       JobStoreQueue(JobStore(node.cortex)), clock=clock)
    own = make_gene(KEY, "ours", "turbofan")
    node.cortex.put_gene(own)
    for s in get_domain("turbofan").demo_states(12, 3):
        dec.record_experience(node, own.id, s, success=s.values["s11"] > 47.6)
    flood = received(6, PEER_A, "day")
    node.cortex.put_genes(flood)
    assert len(auto.after_received(PEER_A.peer_id, flood[:3])) == 2
    clock.advance(23 * 3600)
    assert auto.after_received(PEER_A.peer_id, flood[3:4]) == []  # same day on this clock
    clock.advance(3600 + 1)
    assert len(auto.after_received(PEER_A.peer_id, flood[4:6])) == 2  # a new day
