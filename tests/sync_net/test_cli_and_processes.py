"""`gd-node conflicts ...` without a daemon, and two real `gd-node run` processes that
find each other through their bootstrap files and converge."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from gd_testkit import key_from_int, make_gene

from gd.cli.main import cli
from gd.node.home import Home
from gd.node.store.cortex import Cortex
from gd.node.store.sync_store import SyncStore
from gd.testnet.procs import terminate_all

GD_NODE = Path(sys.executable).with_name("gd-node")


def init_home(root: Path, n: int, extra: str = "", listen: str | None = None) -> Home:
    home = Home(root / f"n{n}")
    args = ["init", "--home", str(home.root), "--org", f"org{n}", "--region", "eu",
            "--seed", n.to_bytes(32, "big").hex()]  # = key_from_int(n)
    if listen:
        args += ["--listen", listen]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    if extra:
        with home.config_path.open("a") as f:
            f.write(extra)
    return home


def test_conflicts_list_show_and_resolve_from_a_file_without_a_daemon(tmp_path):
    home = init_home(tmp_path, 1)
    k1, k2 = key_from_int(1), key_from_int(2)
    gene = make_gene(k1, "shared")
    with Cortex.open(home.cortex_path) as cortex:
        cortex.put_gene(gene.edited(k1, hlc=2 << 16, purpose="ours"))
        SyncStore(cortex).apply_batch(k2.peer_id, [gene.edited(k2, hlc=3 << 16,
                                                               purpose="theirs")], 1)
    run = CliRunner()
    listed = json.loads(run.invoke(cli, ["conflicts", "list", "--json", "--home",
                                         str(home.root)]).output)
    assert [(c["gene_id"], c["sender"]) for c in listed] == [(gene.id, k2.peer_id)]
    key = listed[0]["key"]
    shown = run.invoke(cli, ["conflicts", "show", key, "--json", "--home", str(home.root)])
    data = json.loads(shown.output)
    assert "purpose" in data["differs"] and data["remote"]["purpose"] == "theirs"
    edited = dict(data["remote"], purpose="both-merged")
    path = tmp_path / "resolution.json"
    path.write_text(json.dumps(edited))
    bad = run.invoke(cli, ["conflicts", "resolve", key, "--keep", str(tmp_path / "nope.json"),
                           "--home", str(home.root)])
    assert bad.exit_code == 2 and "--keep" in bad.output
    done = run.invoke(cli, ["conflicts", "resolve", key, "--keep", str(path), "--json",
                            "--home", str(home.root)])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["via"] == "local"
    with Cortex.open(home.cortex_path, readonly=True) as cortex:
        head = cortex.get_gene(gene.id)
        assert head.purpose == "both-merged" and head.hlc > 3 << 16
        assert dict(head.vv) == {k1.peer_id: 3, k2.peer_id: 1}
        head.verify()
    again = run.invoke(cli, ["conflicts", "list", "--json", "--home", str(home.root)])
    assert json.loads(again.output) == []


def test_conflicts_list_on_a_fresh_home_is_empty_and_sync_now_needs_a_daemon(tmp_path):
    home = init_home(tmp_path, 1)
    run = CliRunner()
    assert json.loads(run.invoke(cli, ["conflicts", "list", "--json", "--home",
                                       str(home.root)]).output) == []
    result = run.invoke(cli, ["sync", "now", "--home", str(home.root)])
    assert result.exit_code == 1 and "no gd-node daemon is running" in result.output


@pytest.fixture
def short_tmp():
    """Unix control sockets need short paths; pytest's tmp_path can be too long."""
    root = Path(tempfile.mkdtemp(prefix="gdp", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gd_node_processes_converge_through_their_bootstrap_files(short_tmp):
    tmp_path = short_tmp
    ports = [free_port(), free_port()]
    sync = "\n[sync]\ndebounce_s = 0.1\n"
    homes = [init_home(tmp_path, n + 1, sync, f"/ip4/127.0.0.1/tcp/{ports[n]}")
             for n in range(2)]
    ids = [key_from_int(n + 1).peer_id for n in range(2)]
    # Sovereignty is on in the binary: the genes flow because both sides agreed.
    for n, home in enumerate(homes):
        shared = CliRunner().invoke(cli, ["share", "--with", ids[1 - n], "--domain",
                                          "turbofan", "--home", str(home.root)])
        assert shared.exit_code == 0, shared.output
    for n, home in enumerate(homes):
        other = 1 - n
        (home.root / "boot.toml").write_text(
            f'[[peers]]\npeer_id = "{ids[other]}"\n'
            f'addrs = ["/ip4/127.0.0.1/tcp/{ports[other]}"]\n')
    genes = tmp_path / "genes.jsonl"
    genes.write_text("".join(json.dumps({
        "domain": "turbofan", "name": f"rule-{i}", "action": "inspect",
        "codons": [{"feature": "s11", "op": ">", "threshold": 40 + i}]}) + "\n"
        for i in range(25)))
    imported = CliRunner().invoke(cli, ["genes", "import", str(genes), "--home",
                                        str(homes[0].root)])
    assert imported.exit_code == 0, imported.output
    procs: list[subprocess.Popen] = []
    try:
        for home in homes:
            procs.append(subprocess.Popen(
                [str(GD_NODE), "run", "--home", str(home.root), "--bootstrap",
                 str(home.root / "boot.toml"), "--log-format", "json"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}))
        deadline = time.monotonic() + 60
        count = 0
        while time.monotonic() < deadline and count < 25:
            time.sleep(0.5)
            assert all(p.poll() is None for p in procs), "a gd-node process died"
            with Cortex.open(homes[1].cortex_path, readonly=True) as cortex:
                count = sum(1 for _ in cortex.genes())
        assert count == 25
    finally:
        terminate_all(procs)
        for p in procs:
            if p.stderr is not None:
                p.stderr.close()
    assert [p.returncode for p in procs] == [0, 0]

