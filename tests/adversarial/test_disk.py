"""The node's disk against other local users and against a mistaken (or planted) restore
(issue 11, item 9): every file of a home and of a backup is private whatever the umask,
and `gd-node restore` refuses a Cortex made by another node's key unless told."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from gd_testkit import make_gene

from gd.cli.main import cli
from gd.genome.identity import NodeKey
from gd.node.home import Home
from gd.node.store.cortex import Cortex
from gd.node.store.cortex_owner import adopted_from, owner_of


def invoke(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, (result.output, result.stderr)
    assert "Traceback" not in result.output
    return result


def init(root: Path, name: str, seed: int) -> tuple[Home, NodeKey]:
    home = Home(root / name)
    invoke("init", "--home", str(home.root), "--org", name, "--region", "eu",
           "--seed", seed.to_bytes(32, "big").hex())
    return home, NodeKey.load(home.key_path)


def modes(root: Path) -> Iterator[tuple[Path, int, bool]]:
    """(path, permission bits, is a directory) for `root` and every regular file or
    directory below it (sockets set their own mode)."""
    for path in [root, *root.rglob("*")]:
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            yield path, stat.S_IMODE(st.st_mode), stat.S_ISDIR(st.st_mode)


def assert_private(root: Path) -> None:
    seen = list(modes(root))
    assert len(seen) > 1
    loose = [(str(p), oct(m)) for p, m, is_dir in seen if m != (0o700 if is_dir else 0o600)]
    assert loose == []


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_init_backup_and_restore_leave_nothing_readable_by_others(tmp_path: Path,
                                                                  umask: int) -> None:
    existing = tmp_path / "alpha"
    existing.mkdir()
    os.chmod(existing, 0o755)  # a folder someone made beforehand, world-readable
    home, key = init(tmp_path, "alpha", 1)
    with Cortex.open(home.cortex_path) as cortex:
        cortex.put_gene(make_gene(key))
    assert_private(home.root)
    fresh = tmp_path / "backups" / "one"
    invoke("backup", str(fresh), "--home", str(home.root))
    assert_private(fresh)
    empty = tmp_path / "open-folder"
    empty.mkdir()
    os.chmod(empty, 0o777)
    invoke("backup", str(empty), "--home", str(home.root))
    assert_private(empty)
    invoke("restore", str(fresh), "--home", str(home.root))
    assert_private(home.root)  # the restored Cortex and the one kept aside
    assert (home.root / "cortex.pre-restore-1").is_dir()


def test_restore_refuses_another_nodes_cortex_unless_told(tmp_path: Path) -> None:
    beta, beta_key = init(tmp_path, "beta", 2)
    gamma, gamma_key = init(tmp_path, "gamma", 3)
    loan = make_gene(beta_key, name="decline-low-score", domain="loan", action="decline")
    with Cortex.open(beta.cortex_path) as cortex:
        cortex.put_gene(loan)
    backup = tmp_path / "beta-backup"
    invoke("backup", str(backup), "--home", str(beta.root))

    refused = invoke("restore", str(backup), "--home", str(gamma.root), code=1)
    assert f"belongs to node {beta_key.peer_id}" in refused.stderr
    assert "--from-other-node" in refused.stderr
    with Cortex.open(gamma.cortex_path, readonly=True) as cortex:
        assert cortex.get_gene(loan.id) is None and owner_of(cortex) == gamma_key.peer_id
    assert not (gamma.root / "cortex.pre-restore-1").exists()  # nothing changed

    taken = invoke("restore", str(backup), "--from-other-node", "--home", str(gamma.root),
                   "--json")
    assert json.loads(taken.stdout)["from_other_node"] == beta_key.peer_id
    assert "warning" in taken.stderr and beta_key.peer_id in taken.stderr
    with Cortex.open(gamma.cortex_path, readonly=True) as cortex:
        assert cortex.get_gene(loan.id) is not None
        assert owner_of(cortex) == gamma_key.peer_id
        assert adopted_from(cortex) == beta_key.peer_id
    # Once taken over on purpose, gamma's own backups restore without the flag.
    again = tmp_path / "gamma-backup"
    invoke("backup", str(again), "--home", str(gamma.root))
    invoke("restore", str(again), "--home", str(gamma.root))


def test_restore_refuses_a_cortex_that_names_no_owner(tmp_path: Path) -> None:
    home, key = init(tmp_path, "delta", 4)
    with Cortex.open(tmp_path / "loose-cortex") as loose:  # made without any node key
        loose.put_gene(make_gene(key))
        loose.backup(tmp_path / "loose-backup")
    refused = invoke("restore", str(tmp_path / "loose-backup"), "--home", str(home.root),
                     code=1)
    assert "unknown node" in refused.stderr
