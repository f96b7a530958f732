"""Testnet layout and command-line parsing that need no running node."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from gd.cli.main import cli
from gd.testnet.plan import make_plan, region_sizes


@pytest.mark.parametrize(("orgs", "regions", "sizes"), [
    (4, 2, [3, 1]), (5, 2, [4, 1]), (6, 2, [3, 3]), (7, 3, [3, 3, 1]), (6, 3, [4, 1, 1]),
    (2, 2, [1, 1]), (2, 1, [2]), (3, 2, [2, 1]),
])
def test_regions_get_no_pair_of_voters_when_it_can_be_helped(orgs: int, regions: int,
                                                             sizes: list[int]) -> None:
    assert region_sizes(orgs, regions) == sizes
    assert sum(sizes) == orgs


def test_the_default_testnet_survives_losing_any_one_node_per_region(tmp_path: Path) -> None:
    """`testnet up` with its defaults: every region either has one node or can lose one
    voter and keep a majority of its voters."""
    orgs = next(p.default for p in _up_params() if p.name == "orgs")
    regions = next(p.default for p in _up_params() if p.name == "regions")
    plan = make_plan(tmp_path, orgs=orgs, regions=regions, seed=1)
    assert len(plan.regions) >= 2
    for region in plan.regions:
        voters = [n for n in plan.nodes if n.region == region and n.voter]
        members = [n for n in plan.nodes if n.region == region]
        assert len(members) == 1 or len(voters) - 1 > len(voters) // 2, (region, voters)


def _up_params():  # type: ignore[no-untyped-def]
    testnet = cli.get_command(click.Context(cli), "testnet")  # a lazy command
    return testnet.commands["up"].params  # type: ignore[attr-defined]


def test_partition_without_a_bar_explains_the_syntax(tmp_path: Path) -> None:
    """What the user typed: `partition node-1 node-2` (no '|')."""
    make_plan(tmp_path, orgs=3, regions=1, seed=1).save()
    result = CliRunner().invoke(cli, ["testnet", "partition", "node-1", "node-2",
                                      "--dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "separate the sides with '|'" in result.output
    assert "node-1,node-2 '|' node-3" in result.output
    assert "no node" not in result.output
    unknown = CliRunner().invoke(cli, ["testnet", "partition", "node-1", "|", "node-9",
                                       "--dir", str(tmp_path)])
    assert unknown.exit_code == 1 and "no node 'node-9'" in unknown.output
