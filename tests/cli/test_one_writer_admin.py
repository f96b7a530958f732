"""One writer for the administrative commands (issue 12.1, ADR 0022): `tokens create /
revoke`, `jobs cancel`, `org trust / untrust` and `conflicts resolve` go through a running
daemon, which acts on them at once (a revoked token is refused, an untrusted org's peers
handshake again); with no daemon they write under the home's lock."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner
from daemon_cluster import DaemonCluster, org_key_for_tests, quiet_libp2p
from gd_testkit import key_from_int
from lock_watch import lock_holders_during

from gd.cli import writer
from gd.cli.main import cli
from gd.genome.certificate import org_key_text
from gd.node.api.job_store import Job, JobStore, new_job_id
from gd.node.api.tokens import TokenStore
from gd.node.config import NodeConfig
from gd.node.control import call
from gd.node.control_methods import admin_ops
from gd.node.control_methods.trust_reload import changed_orgs
from gd.node.credentials import load_trusted_orgs
from gd.node.home import Home
from gd.node.local import initialise_home
from gd.node.lock import holder_pid
from gd.node.store.cortex import Cortex


@pytest.fixture(autouse=True)
def _quiet() -> None:
    quiet_libp2p()


def _init(home: Home, n: int) -> None:
    home.root.mkdir(parents=True, exist_ok=True)
    initialise_home(home, NodeConfig(org=f"org{n}", region="eu"), key_from_int(n))


def _cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def _no_local_write(*args: object, **kwargs: object) -> None:
    raise AssertionError("the CLI opened the Cortex beside a running daemon")


async def _run(*args: object) -> tuple[int, str]:
    return await trio.to_thread.run_sync(lambda: _cli(*args))


async def test_tokens_and_jobs_go_through_the_daemon_and_a_revoked_token_is_refused_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with DaemonCluster.in_tmp("gdwa") as c:
        _init(c.home(1), 1)
        async with trio.open_nursery() as nursery:
            a = await c.start_daemon(nursery, 1)
            monkeypatch.setattr(writer, "open_local", _no_local_write)
            home = c.home(1).root
            code, out = await _run("tokens", "create", "--role", "viewer", "--domain", "*",
                                   "--home", home, "--json")
            assert code == 0, out
            created = json.loads(out)
            tokens = TokenStore(a.cortex)
            assert tokens.verify(created["token"])[0] is not None  # the daemon's Cortex has it
            code, out = await _run("tokens", "revoke", created["id"], "--home", home, "--json")
            assert code == 0, out
            assert json.loads(out)["state"] == "revoked"
            token, why = tokens.verify(created["token"])
            assert token is None and "revoked" in why
            jobs = JobStore(a.cortex)
            job = jobs.add(Job(id=new_job_id(jobs.now_ms()), kind="evaluate", gene_id="g1",
                               domain="turbofan", actor="test", params={}))
            code, out = await _run("jobs", "cancel", job.id, "--home", home, "--json")
            assert code == 0, out
            assert json.loads(out)["state"] == "cancelled"
            assert JobStore(a.cortex).require(job.id).state == "cancelled"
            served = await trio.to_thread.run_sync(lambda: call(c.home(1), "writes_served"))
            assert served == {"writes": 3, "pid": os.getpid()}
            c.stop_all(a)


async def test_org_untrust_through_the_daemon_applies_at_once_and_its_peers_handshake_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with DaemonCluster.in_tmp("gdwt") as c:
        _init(c.home(1), 1)
        _init(c.home(2), 2)
        async with trio.open_nursery() as nursery:
            a = await c.start_daemon(nursery, 1)
            b = await c.start_daemon(nursery, 2, boot=[a])
            await c.connected(a, b)
            await c.until(lambda: b.table.get(a.peer_id).certified_org == "org1")
            monkeypatch.setattr(writer, "open_local", _no_local_write)
            code, out = await _run("org", "untrust", "org1", "--home", c.home(2).root)
            assert code == 0, out
            assert "the daemon applied it" in out
            assert "org1" not in b.credentials.trust.orgs  # no restart needed

            def a_uncertified() -> bool:
                rec = b.table.get(a.peer_id)
                return rec is not None and (not rec.connected or rec.certified_org is None)

            await c.until(a_uncertified)
            key = org_key_text(org_key_for_tests("org1").public_key)
            code, out = await _run("org", "trust", "org1", key, "--home", c.home(2).root,
                                   "--json")
            assert code == 0, out
            assert b.credentials.trust.trusts("org1", org_key_for_tests("org1").public_key)
            c.stop_all(a, b)


def test_org_trust_with_no_daemon_writes_the_pins_under_the_homes_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Home(tmp_path / "n1")
    _init(home, 1)
    holders = lock_holders_during(monkeypatch, admin_ops, "trust_org", home)
    raw = org_key_for_tests("beta").public_key
    code, out = _cli("org", "trust", "beta", org_key_text(raw), "--home", home.root)
    assert code == 0, out
    assert holders == [os.getpid()]
    assert load_trusted_orgs(home.root).trusts("beta", raw)
    code, out = _cli("org", "trust", "beta", "ed25519:zz", "--home", home.root)
    assert code == 1 and "Traceback" not in out


def test_tokens_create_with_no_daemon_writes_under_the_lock_and_prints_the_secret_once(
        tmp_path: Path) -> None:
    home = Home(tmp_path / "n1")
    _init(home, 1)
    code, out = _cli("tokens", "create", "--role", "operator", "--domain", "turbofan",
                     "--home", home.root, "--json")
    assert code == 0, out
    data = json.loads(out)
    assert holder_pid(home.pid_path) is None  # the lock was released
    with Cortex.open(home.cortex_path, readonly=True, create=False) as cortex:
        token, _ = TokenStore(cortex).verify(data["token"])
    assert token is not None and token.role.label == "operator"


def test_changed_orgs_are_those_whose_pins_differ() -> None:
    from gd.genome.certificate import TrustAnchors

    k1, k2 = (org_key_for_tests(n).public_key for n in ("x", "y"))
    old = TrustAnchors.of([("a", k1), ("b", k2)])
    new = TrustAnchors.of([("a", k1), ("b", k1), ("c", k2)])
    assert changed_orgs(old, new) == {"b", "c"}
    assert changed_orgs(old, old) == set()
