"""fedsim's breadth on the real services (`service_sim_fed_rules`): every kind of rule,
3-5 nodes in two regions, clock skew, per-step audit checks. Each new rule kind has a
teeth test: the product's own check for it is broken in memory (monkeypatch) and the
independent oracle must catch the run.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import service_sim_fed_rules
from service_sim import ServiceSimFailure
from service_sim_fed_rules import RulesNet
from service_sim_sov import SovSimResult

import gd.node.store.sync_store
import gd.protocol.sovereignty
from gd.crdt.hlc import HLC
from gd.genome import canonical
from gd.genome.gene import Gene, ShareScope
from gd.node.store.audit import AUDIT_DB
from gd.protocol.policy_rules import (
    Direction,
    Effect,
    PeerInfo,
    ResidencyRule,
    ShareRule,
    Subject,
    SubjectKind,
)
from gd.protocol.sovereignty import PolicySet, ShareDecision

# `make sim SEEDS=N` (N <= 200) runs N federation seeds here, from SEED_START; the
# sweep (tests/sim/sweep.py, `fed:SEED`) runs more.
SEEDS = min(int(os.environ.get("SEEDS", 12)), 200)
SEED_START = int(os.environ.get("SEED_START", 0))


def _run(seed: int, net_class: type[RulesNet] = RulesNet) -> SovSimResult:
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as scratch:
        return service_sim_fed_rules.run(seed, Path(scratch), net_class)


@pytest.mark.parametrize("seed", range(SEED_START, SEED_START + SEEDS))
def test_every_rule_kind_keeps_the_invariants_on_the_real_services(seed: int) -> None:
    try:
        _run(seed)
    except ServiceSimFailure as exc:
        pytest.fail(f"{exc}\nreplay: python tests/sim/service_sim_fed_rules.py {seed} 1",
                    pytrace=False)


def test_a_rules_seed_replays_bit_for_bit() -> None:
    first, again, other = _run(5), _run(5), _run(6)
    assert first.trace == again.trace and first.trace_hash == again.trace_hash
    assert other.trace_hash != first.trace_hash


def test_the_runs_draw_every_rule_kind_topology_and_check() -> None:
    kinds: Counter[str] = Counter()
    for seed in range(16):
        kinds.update(_run(seed).stats)
    for kind in ("rule_deny_both_peer", "rule_allow_send_peer", "rule_allow_receive_peer",
                 "rule_allow_both_org", "rule_allow_both_region", "rule_any_domain",
                 "residency", "sent_with_residency", "accepted_with_residency",
                 "anonymised_out", "derived_out", "forwarded", "nodes_3", "nodes_4",
                 "nodes_5", "shared_org", "resolved_skewed", "audit_records_checked",
                 "agreements_checked", "consent_checked", "refusals_explained",
                 "listed_items", "revoke", "crash", "fault drop", "fault replay"):
        assert kinds[kind] > 0, kind


def _first_failure(net_class: type[RulesNet], monkeypatch: pytest.MonkeyPatch,
                   seeds: int = 24) -> str:
    """The first failure among `seeds` with the product broken (the patches made so
    far); that seed must then pass on the intact product."""
    for seed in range(seeds):
        try:
            _run(seed, net_class)
        except ServiceSimFailure as exc:
            monkeypatch.undo()
            _run(seed, net_class)  # the break made the difference
            return str(exc)
    return "no seed failed"


# -- teeth: the product's check for each rule kind broken in memory ---------------------

_evaluate = gd.protocol.sovereignty.evaluate_rules


def _without_denies(rules: Sequence[ShareRule], *args: Any) -> Any:
    return _evaluate([r for r in rules if r.effect is Effect.ALLOW], *args)


def _both_ways(rules: Sequence[ShareRule], *args: Any) -> Any:
    return _evaluate([dataclasses.replace(r, direction=Direction.BOTH) for r in rules], *args)


class DenyNet(RulesNet):
    deny_rate = 0.3


class OneWayNet(RulesNet):
    send_only_rate = 0.4
    receive_only_rate = 0.4


class RegionNet(RulesNet):
    region_rate = 0.7
    org_rate = 0.1


class ResidencyNet(RulesNet):
    residency_start = 1.0


class ScopeNet(RulesNet):
    scope_residency_rate = 0.8


_matches = Subject.matches
_send = PolicySet.allowed_to_send


def _region_matches_all(self: Subject, peer: PeerInfo) -> bool:
    return self.kind is SubjectKind.REGION or _matches(self, peer)


def _scope_ignored(self: PolicySet, gene: Gene, *args: Any) -> ShareDecision:
    decision = _send(self, gene, *args)
    if not decision.allowed and "scope keeps it in region" in decision.reason:
        return _send(self, dataclasses.replace(
            gene, scope=ShareScope(forward=gene.scope.forward)), *args)
    return decision


@pytest.mark.parametrize(("target", "name", "broken", "net_class"), [
    (gd.protocol.sovereignty, "evaluate_rules", _without_denies, DenyNet),
    (gd.protocol.sovereignty, "evaluate_rules", _both_ways, OneWayNet),
    (Subject, "matches", _region_matches_all, RegionNet),
    (ResidencyRule, "covers", lambda self, domain: False, ResidencyNet),
    (PolicySet, "allowed_to_send", _scope_ignored, ScopeNet),
], ids=["deny", "send-or-receive-only", "region-subject", "residency-rule",
        "gene-residency-scope"])
def test_each_rule_kind_broken_in_the_product_is_caught(
        monkeypatch: pytest.MonkeyPatch, target: Any, name: str, broken: Any,
        net_class: type[RulesNet]) -> None:
    monkeypatch.setattr(target, name, broken)
    failure = _first_failure(net_class, monkeypatch)
    assert any(text in failure for text in (
        "no rule of its own", "newest proposal it knows refuses", "never allowed",
        "in scope", "holds no head for")), failure


class SkewNet(RulesNet):
    """Clocks up to 30 s apart (the HLC's drift limit is 60 s): a resolution made soon
    after the versions it settles meets a side stamped ahead of its own clock."""

    max_skew_ms = 30_000


def _echoing(self: PolicySet, gene: Gene, *args: Any) -> ShareDecision:
    decision = _send(self, gene, *args)
    if not decision.allowed and "authored this version" in decision.reason:
        return ShareDecision(True, "broken", None, False, gene.scope.forward, gene.scope)
    return decision


def test_a_version_offered_back_to_its_author_is_caught(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """fedsim's "echo" check (seeds 12, 13), on the real sender views."""
    monkeypatch.setattr(PolicySet, "allowed_to_send", _echoing)
    failure = _first_failure(RulesNet, monkeypatch)
    assert failure.startswith("FAILED SEED=") and "echo:" in failure, failure


class _StampOfTheClock:
    """An HLC that forgets the sides' stamps: a resolution stamped by the wall clock."""

    @staticmethod
    def from_packed(packed: int) -> HLC:
        return HLC()


def test_a_resolution_stamped_below_a_skewed_side_is_caught(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gd.node.store.sync_store, "HLC", _StampOfTheClock)
    failure = _first_failure(SkewNet, monkeypatch, seeds=40)
    assert "not above both sides" in failure, failure


class TamperNet(RulesNet):
    """Node 0's newest audit record is rewritten in place, mid-run."""

    tampered = False

    def check_audit_tails(self) -> None:
        node = self.nodes[0]
        count = self.audit_seen[0][0]
        if not self.tampered and count > 3 and node.cortex is not None:
            self.tampered = True
            db = node.cortex.open_db(AUDIT_DB)
            key = (count - 1).to_bytes(8, "big")

            def rewrite(txn: Any) -> None:
                stored = canonical.decode(txn.get(key, db=db))
                stored["hash"] = bytes(32)
                txn.put(key, canonical.encode(stored), db=db)

            node.cortex.write(rewrite)
        super().check_audit_tails()


def test_an_audit_record_rewritten_mid_run_is_caught_at_the_next_step() -> None:
    with pytest.raises(ServiceSimFailure, match=r"audit record \d+ changed"):
        _run(0, TamperNet)
    _run(0)


# -- fedsim's findings, kept on the real drivers ------------------------------------------
# fedsim named these paths by seed (test_federation_sim.py, gone with fedsim); their unit
# regressions are in tests/sovereignty/test_sim_regressions.py (overlapping rules, late
# shares, outbox numbers, nothing back to its author), tests/cortex (seed 3151) and
# test_service_sim_fed.py (seed 6). Here each path runs on the real services by name.


@pytest.mark.parametrize(("seed", "path"), [
    (3, "overlapping_rules"),  # fedsim 0, 2: each overlapping rule proposed and revoked
    (3, "stale_proposals"),  # fedsim 15, 11: a late duplicate share cannot undo a revoke
    (12, "forwarded"),  # fedsim 12, 13: forwarders never derive, nothing echoes back
    (14, "derived_edits_not_returned"),  # fedsim 241: an edit of a derived form
    (5, "shared_org"),  # two nodes of one organisation
])
def test_fedsims_findings_run_on_the_real_services(seed: int, path: str) -> None:
    assert _run(seed).stats[path] > 0
