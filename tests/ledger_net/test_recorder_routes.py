"""Which route the ledger recorder takes, from the home's config (no network needed)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from gd_testkit import key_from_int

from gd.cli.main import cli
from gd.genome import canonical
from gd.node.home import Home
from gd.node.services.recorder import DaemonRoute, DirectRoute, LedgerRecorder, OutboxRoute, Queued
from gd.node.store.cortex import Cortex


def init_home(root: Path, voters: tuple[str, ...]) -> Home:
    home = Home(root / "n1")
    result = CliRunner().invoke(cli, ["init", "--home", str(home.root), "--org", "org1",
                                      "--region", "eu", "--seed", "01" * 32])
    assert result.exit_code == 0, result.output
    if voters:
        listed = ", ".join(f'"{v}"' for v in voters)
        text = home.config_path.read_text().replace("voters = []", f"voters = [{listed}]")
        home.config_path.write_text(text)
    return home


def test_a_region_member_without_a_daemon_queues_in_the_outbox(tmp_path: Path) -> None:
    voters = tuple(key_from_int(n).peer_id for n in (1, 2, 3))
    home = init_home(tmp_path, voters)
    key = node_key(home)
    with Cortex.open(home.cortex_path) as cortex:
        rec = LedgerRecorder(cortex.env, key)
        assert isinstance(rec.route, DaemonRoute)
        first = rec.append("promotion", canonical.sha256(b"gene"), {"gene": "g1"})
        assert isinstance(first, Queued) and first.ok
        again = rec.append("promotion", canonical.sha256(b"gene"), {"gene": "g1"})
        assert again.statement_hash == first.statement_hash  # the first signed copy stays
        many = rec.append_many([("decision", canonical.sha256(bytes([i])), {"i": i})
                                for i in range(3)])
        assert [r.status for r in many] == ["queued"] * 3
        assert rec.ledger.size == 0  # never appended locally: that would fork the region
        queued = OutboxRoute(cortex.env).queued()
        assert len(queued) == 4 and all(s.author == key.peer_id for s in queued)
        for statement in queued:
            statement.verify_signature()


def test_a_region_of_one_appends_directly(tmp_path: Path) -> None:
    home = init_home(tmp_path, ())
    with Cortex.open(home.cortex_path) as cortex:
        rec = LedgerRecorder(cortex.env, node_key(home))
        assert isinstance(rec.route, DirectRoute)
        receipt = rec.append("decision", canonical.sha256(b"x"), {"v": 1})
        assert (receipt.status, receipt.index) == ("appended", 0)
        assert rec.ledger.latest_head().size == 1
        assert OutboxRoute(cortex.env).queued() == []


def node_key(home: Home):
    from gd.genome.identity import NodeKey

    return NodeKey.load(home.key_path)
