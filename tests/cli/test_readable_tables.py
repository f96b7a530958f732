"""Issue 13, items 7, 9 and 10 (share): peers by name, tables that fit 80 columns, and a
`share` that says what the other side must run.

The peer `globex (us-east)` is recorded as the handshake would record it; its genes
arrive as adaptation_pending, as sync stores them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import run_cli as run
from gd_testkit import key_from_int, make_gene

import gd.cli.output as output
from gd.genome.gene import GeneStatus
from gd.node.store.cortex import Cortex
from gd.node.store.policy_store import PolicyStore
from gd.protocol.policy_rules import PeerInfo

GLOBEX = key_from_int(2)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    assert run("init", "--home", str(h), "--org", "acme", "--region", "eu-west",
               "--seed", (1).to_bytes(32, "big").hex())[0] == 0
    with Cortex.open(h / "cortex") as cortex:
        store = PolicyStore(cortex, key_from_int(1), org="acme", region="eu-west")
        store.set_peer(PeerInfo(GLOBEX.peer_id, "globex", "us-east"))
        genes = [make_gene(GLOBEX, name=f"received-rule-number-{i}", threshold=47.0 + i)
                 .with_local(status=GeneStatus.ADAPTATION_PENDING) for i in range(3)]
        cortex.put_genes(genes)
    return h


@pytest.fixture
def width() -> Iterator[callable]:
    before = output.console.width

    def set_width(n: int) -> None:
        output.console.width = n

    yield set_width
    output.console.width = before


def test_pending_list_fits_80_columns_and_names_the_origin(home: Path, width) -> None:
    width(80)
    code, out = run("pending", "list", "--home", str(home))
    assert code == 0, out
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert GLOBEX.peer_id not in out
    # the label may wrap between name and id, but the id stays whole
    assert out.count("globex (us-east)") == 3 and out.count(f"…{GLOBEX.peer_id[-8:]}") == 3
    listed = json.loads(run("pending", "list", "--home", str(home), "--json")[1])
    for g in listed:
        assert g["origin"] == GLOBEX.peer_id  # --json keeps the full id
        assert g["id"][:12] in out  # the short id is whole, never folded
    width(160)
    wide = run("pending", "list", "--home", str(home))[1]
    assert "s11 > 47" in wide  # the condition where it fits


def test_agreements_and_share_name_peers_and_say_what_to_run(home: Path, width) -> None:
    width(80)
    code, out = run("share", "--with", "org:globex", "--domain", "turbofan", "--home",
                    str(home))
    assert code == 0, out
    assert f"globex (us-east) …{GLOBEX.peer_id[-8:]}: proposed" in out  # soft-wrapped
    assert "gd-node share --with org:acme --domain turbofan" in out
    code, out = run("share", "--with", GLOBEX.peer_id, "--domain", "loan", "--direction",
                    "send", "--home", str(home))
    assert code == 0, out
    assert "--direction receive" in out
    me = key_from_int(1).peer_id
    assert f"gd-node share --with {me} --domain loan" in out.replace("\n", "")
    code, out = run("agreements", "list", "--home", str(home))
    assert code == 0, out
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert GLOBEX.peer_id not in out  # neither as the peer nor inside the rule text
    assert "globex (us-east)" in out
    data = json.loads(run("agreements", "list", "--home", str(home), "--json")[1])
    assert {a["peer"] for a in data} == {GLOBEX.peer_id}
    assert any(GLOBEX.peer_id in (a["ours"] or "") for a in data)


def test_audit_list_names_peers_with_iso_times_and_fits_80_columns(home: Path, width) -> None:
    width(80)
    assert run("share", "--with", GLOBEX.peer_id, "--domain", "turbofan", "--home",
               str(home))[0] == 0
    with Cortex.open(home / "cortex") as cortex:
        from gd.node.store.audit import AuditKind, AuditLog
        AuditLog(cortex).append(AuditKind.GENE_REFUSED, peer=GLOBEX.peer_id,
                                gene_id="ab" * 16, direction="in", time_ms=1_764_000_000_000)
    code, out = run("audit", "list", "--home", str(home))
    assert code == 0, out
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert GLOBEX.peer_id not in out
    # the label may wrap between org, region and id, but the id stays whole
    assert "globex" in out and "(us-east)" in out and f"…{GLOBEX.peer_id[-8:]}" in out
    assert "2025-11-24T16:00:00Z" in out and "gene_refused" in out
    assert "ab" * 6 in out  # the short gene id, whole
    code, out = run("audit", "list", "--kind", "gene_refused", "--json", "--home", str(home))
    rows = json.loads(out)
    assert [r["peer"] for r in rows] == [GLOBEX.peer_id]  # --json keeps the full id
