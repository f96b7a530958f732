"""The testnet's demo genes come with history (issue 14): `make run` shows verdicts that
rest on evidence, a realistic mix, not a wall of one verdict.

Built in-process exactly as `testnet up` builds its homes (testnet/build.py), without
starting any daemon: plan, homes, demo genes, each org's demo record, decisions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from gd.motors.domains import get_domain
from gd.node.home import Home
from gd.node.local import open_local
from gd.testnet.build import evaluate_demo_genes, init_node_home, spread_demo_genes
from gd.testnet.demo import (
    HISTORY_BY_ORG,
    give_demo_history,
    history_size,
    write_demo_history,
)
from gd.testnet.plan import TestnetPlan, make_plan

SEED = 1       # `gd-node testnet up`'s default seed: what `make run` shows


def _homes(plan: TestnetPlan) -> list[Path]:
    return [Path(n.home) for n in plan.nodes]


def _build(tmp_path: Path, *, history: bool) -> tuple[TestnetPlan, dict[str, int]]:
    plan = make_plan(tmp_path, orgs=4, regions=2, seed=SEED)
    for node in plan.nodes:
        init_node_home(node, plan)
    spread_demo_genes(plan)
    learned = give_demo_history(_homes(plan), plan.seed) if history else {}
    evaluate_demo_genes(plan)
    return plan, learned


def _decisions(plan: TestnetPlan) -> list[tuple[int, str, str, str]]:
    """(org index, gene name, band, verdict) of every stored decision."""
    out = []
    for index, home in enumerate(_homes(plan)):
        with open_local(Home.resolve(home)) as local:
            for d in local.cortex.decisions(None):
                gene = local.cortex.require_gene(d.gene_id)
                out.append((index, gene.name, d.band, d.verdict))
    return out


@pytest.fixture(scope="module")
def with_history(tmp_path_factory: pytest.TempPathFactory
                 ) -> tuple[TestnetPlan, dict[str, int], list[tuple[int, str, str, str]]]:
    plan, learned = _build(tmp_path_factory.mktemp("tn"), history=True)
    return plan, learned, _decisions(plan)


def test_demo_decisions_are_a_mix_with_needs_evidence_and_approvals(with_history) -> None:
    _, _, decisions = with_history
    verdicts = Counter(v for *_, v in decisions)
    assert len(decisions) == 8                      # every demo gene decided once
    assert len(verdicts) >= 3, verdicts
    assert verdicts["needs-evidence"] >= 1, verdicts
    assert verdicts["approve"] >= 1, verdicts       # something the evidence supports
    assert verdicts["veto"] + verdicts["adapt"] >= 1, verdicts


def test_each_org_learned_as_much_as_its_record_holds(with_history) -> None:
    plan, learned, decisions = with_history
    by_home = [learned[p.name] for p in _homes(plan)]
    for index, recorded in enumerate(by_home):
        engines, applications = history_size(index)
        assert (recorded > 0) == (engines + applications > 0), (index, recorded)
    # The org without a record is told it needs evidence, not vetoed for the lack of it.
    newcomer = {v for i, _, _, v in decisions if HISTORY_BY_ORG[i] == (0, 0)}
    assert newcomer == {"needs-evidence"}


def test_history_is_what_turns_needs_evidence_into_a_decision(tmp_path: Path,
                                                              with_history) -> None:
    """Same testnet without the records: the gene the history approves is undecided."""
    _, _, decisions = with_history
    approved = {name for _, name, _, v in decisions if v == "approve"}
    bare, _ = _build(tmp_path, history=False)
    before = {name: v for _, name, _, v in _decisions(bare)}
    assert approved and all(before[name] == "needs-evidence" for name in approved), before


def test_demo_records_are_read_by_the_packs_own_loaders(tmp_path: Path) -> None:
    """The synthetic records use the real data's layouts (C-MAPSS text, BPI 2017 CSV):
    the packs' loaders label them, and the same seed writes the same bytes."""
    for domain, size in (("turbofan", 2), ("loan", 25)):
        path = write_demo_history(domain, tmp_path, seed=3, size=size)
        record = get_domain(domain).history(path)
        assert len(record.X) > 0 and set(record.labels) == set(get_domain(domain).actions)
        again = write_demo_history(domain, tmp_path / "..", seed=3, size=size)
        assert again.read_bytes() == path.read_bytes()
    turbofan = get_domain("turbofan").history(tmp_path / "train_demo.txt")
    assert len(set(turbofan.entities)) == 2 and turbofan.labels["inspect"].any()
