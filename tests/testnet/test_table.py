"""The node table `testnet status` and the dashboard share: fitted to the width, ids
whole, stale values marked, a legend, leaders and partitions spelled out."""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console

from gd.testnet.dashboard import render
from gd.testnet.observe import NodeView, partition_groups, region_ledgers
from gd.testnet.plan import make_plan
from gd.testnet.table import legend, network_lines, node_table, short_id


def _views(tmp_path: Path):  # type: ignore[no-untyped-def]
    plan = make_plan(tmp_path, orgs=4, regions=2, seed=5)
    views = []
    for i, n in enumerate(plan.nodes):
        v = NodeView(n.name, n.org, n.region, n.peer_id, running=True, pid=1000 + i,
                     peers=3, native=2, pending=i, genes=2 + i, ledger_height=9,
                     sync_lag=i, conflicts=0, decisions=2, role="follower", term=2)
        views.append(v)
    views[0].role, views[0].leader = "leader", None
    for v in views[1:]:
        v.leader = views[0].peer_id if v.region == views[0].region else v.peer_id
    views[1].role = "leader"  # alone in us-east
    return plan, views


def _text(renderable, width: int) -> str:  # type: ignore[no-untyped-def]
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_status_table_fits_80_columns_and_never_cuts_an_id(tmp_path: Path) -> None:
    _, views = _views(tmp_path)
    for width in (60, 80, 200):
        table, headers = node_table(views, width)
        text = _text(table, width)
        assert max(len(line) for line in text.splitlines()) <= width
        for v in views:
            assert re.search(rf"\b{v.name}\b", text)
        if "peer id" in headers:
            assert all(short_id(v.peer_id) in text for v in views)
    _, narrow = node_table(views, 80)
    _, wide = node_table(views, 200)
    assert {"node", "state", "ledger", "role", "sync lag"} <= set(narrow)
    assert set(narrow) < set(wide) and "peer id" in wide


def test_a_stopped_node_shows_its_numbers_as_last_known(tmp_path: Path) -> None:
    _, views = _views(tmp_path)
    down = views[2]
    down.running, down.pid, down.role = False, None, ""
    table, headers = node_table(views, 200)
    row = next(line for line in _text(table, 200).splitlines() if line.startswith(down.name))
    assert "down" in row and "(9)" in row and "(2)" in row  # ledger, native: from disk
    assert "follower" not in row and " 3 " not in row  # nothing live: peers shown as "-"
    assert "(n): last known, node down" in legend(headers)
    live_row = next(line for line in _text(table, 200).splitlines()
                    if line.startswith(views[0].name))
    assert "(" not in live_row


def test_legend_explains_every_shown_number_column(tmp_path: Path) -> None:
    _, views = _views(tmp_path)
    _, headers = node_table(views, 200)
    text = legend(headers)
    for header in ("ledger", "sync lag", "peers", "pending", "role"):
        assert f"{header}: " in text


def test_leaders_and_partitions_are_spelled_out(tmp_path: Path) -> None:
    plan, views = _views(tmp_path)
    lines = network_lines(views, region_ledgers(plan, views))
    assert f"eu-west: {views[0].name} (term 2)" in lines[0]
    assert "us-east: node-2" in lines[0]
    assert lines[1].startswith("partition") and "none" in lines[1]
    # node-1,node-2 | node-3,node-4: each side denies the other, as `partition` does
    side_a, side_b = views[:2], views[2:]
    for v in side_a:
        v.denied = [w.peer_id for w in side_b]
    for v in side_b:
        v.denied = [w.peer_id for w in side_a]
    assert partition_groups(views) == [["node-1", "node-2"], ["node-3", "node-4"]]
    # the eu-west leader goes down: no live node leads eu-west until one is elected
    views[0].running = False
    lines = network_lines(views, region_ledgers(plan, views))
    assert "eu-west: no leader" in lines[0]
    assert "node-1,node-2 | node-3,node-4" in lines[1]


def test_the_dashboard_sync_column_is_the_status_sync_lag(tmp_path: Path) -> None:
    plan, views = _views(tmp_path)
    views[3].sync_lag = 7
    panel = _text(render(plan, views, 0.0, width=120), 120)
    row = next(line for line in panel.splitlines() if "node-4" in line and "umbrella" in line)
    status_row = next(line for line in _text(node_table(views, 116)[0], 116).splitlines()
                      if line.startswith("node-4"))
    assert " 7 " in row and status_row.split() == row.strip("│ ").split()
    assert "sync lag:" in panel and "ledger leaders" in panel and "partition" in panel
