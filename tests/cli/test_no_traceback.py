"""Issue 13, item 1: no command ever shows a traceback, and `approve` tells the truth
when the region's ledger has no quorum.

Every command of the `gd-node` tree (enumerated from click, so a new command is covered
without editing this file) runs against (a) a home that does not exist, (b) a home whose
daemon is stopped, and (c) a real `gd-node run` daemon that is a voter of a three-voter
region whose other two voters never start: its ledger has no quorum and no leader, as a
node cut off by `testnet partition` has.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from gd_testkit import key_from_int

from gd.cli.main import cli
from gd.node.control import ControlError, call
from gd.node.home import Home
from gd.node.services.recorder import OutboxRoute
from gd.node.store.cortex import Cortex

GD_NODE = Path(sys.executable).with_name("gd-node")
START_TIMEOUT_S = 60.0
# The issue asks for "a couple of seconds"; the bound leaves room for a loaded 2-core box
# (the measured time is printed).
APPROVE_BOUND_S = 20.0
# Commands that start long-lived processes (a daemon, a testnet) are not run here.
LONG_RUNNING = {("run",), ("testnet", "up"), ("testnet", "join")}
GENE = {"domain": "turbofan", "name": "inspect-when-hot",
        "codons": [{"feature": "s11", "op": ">", "threshold": 47.6}], "action": "inspect",
        "params": {}, "purpose": "avoid unplanned failure"}


def invoke(*args: str) -> click.testing.Result:
    return CliRunner().invoke(cli, list(args))


def all_commands() -> list[tuple[tuple[str, ...], click.Command]]:
    out: list[tuple[tuple[str, ...], click.Command]] = []

    def walk(cmd: click.Command, path: tuple[str, ...]) -> None:
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)  # list_commands, not .commands: lazy ones too
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None, (path, name)
                walk(sub, (*path, name))
        else:
            out.append((path, cmd))

    walk(cli, ())
    return out


class Values:
    """Plausible values for every required parameter, by name and type."""

    def __init__(self, root: Path, gene_id: str) -> None:
        self.root = root
        self.gene_id = gene_id
        self.states = root / "states.csv"
        self.states.write_text("unit,cycle,s11\n1,1,47.9\n")
        self.dir = root / "a-dir"
        self.dir.mkdir(exist_ok=True)
        self.fresh = 0

    def for_param(self, param: click.Parameter) -> str:
        name = param.name or ""
        kind = param.type
        if isinstance(kind, click.Choice):
            return str(kind.choices[0])
        if isinstance(kind, click.IntRange):
            return str(max(kind.min or 0, 1 if name == "to_version" else 0))
        if isinstance(kind, click.Path):
            if kind.exists and not kind.file_okay:
                return str(self.dir)
            if kind.exists:
                return str(self.states)
            self.fresh += 1
            return str(self.root / f"fresh-{self.fresh}")
        return {"org": "acme", "region": "eu-west", "domain": "turbofan",
                "target": "org:globex", "reason": "why", "keep": "local",
                "spec": "node-1|node-2", "node": "node-1"}.get(name, self.gene_id)

    def args(self, path: tuple[str, ...], cmd: click.Command, home: Path) -> list[str]:
        args = list(path)
        for param in cmd.params:
            if isinstance(param, click.Argument) and param.required:
                args.append(self.for_param(param))
            elif isinstance(param, click.Option) and param.required:
                args += [param.opts[0], self.for_param(param)]
        names = {p.name for p in cmd.params}
        if "home" in names:
            args += ["--home", str(home)]
        if "directory" in names:
            args += ["--dir", str(self.root / "testnet-dir")]
        return args


def assert_no_traceback(values: Values, home: Path | None, skip: set[tuple[str, ...]]
                        ) -> int:
    """Run every command not in `skip` on `home` (None: a fresh missing home each, so
    `init` creates nothing the next command would find)."""
    ran = 0
    for path, cmd in all_commands():
        if path in skip:
            continue
        where = home if home is not None else values.root / "missing" / "-".join(path)
        args = values.args(path, cmd, where)
        result = invoke(*args)
        shown = result.output
        assert "Traceback" not in shown, (args, shown)
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            args, repr(result.exception), shown)
        assert result.exit_code in (0, 1, 2), (args, result.exit_code, shown)
        ran += 1
    return ran


def test_every_command_without_a_home_fails_cleanly(tmp_path: Path) -> None:
    values = Values(tmp_path, "0123456789abcdef")
    ran = assert_no_traceback(values, None, LONG_RUNNING - {("run",)})
    assert ran >= 50


def test_every_command_with_the_daemon_stopped(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert invoke("init", "--home", str(home), "--org", "acme",
                  "--region", "eu-west").exit_code == 0
    genes = tmp_path / "g.jsonl"
    genes.write_text(json.dumps(GENE) + "\n")
    assert invoke("genes", "import", str(genes), "--pending", "--home", str(home)
                  ).exit_code == 0
    gene_id = json.loads(invoke("genes", "list", "--home", str(home), "--json").output)[0]["id"]
    ran = assert_no_traceback(Values(tmp_path, gene_id), home, LONG_RUNNING)
    assert ran >= 50


def test_an_unexpected_error_is_one_line_and_debug_shows_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gd.cli.genes_cmds as genes_cmds

    def boom(*_a: object, **_k: object) -> None:
        raise ZeroDivisionError("something nobody expected")

    monkeypatch.setattr(genes_cmds, "open_local", boom)
    result = invoke("genes", "list", "--home", str(tmp_path))
    assert result.exit_code == 1
    assert "unexpected ZeroDivisionError: something nobody expected" in result.output
    assert "--debug" in result.output and "Traceback" not in result.output
    debug = invoke("--debug", "genes", "list", "--home", str(tmp_path))
    assert isinstance(debug.exception, ZeroDivisionError)
    monkeypatch.setenv("GD_DEBUG", "1")
    env = invoke("genes", "list", "--home", str(tmp_path))
    assert isinstance(env.exception, ZeroDivisionError)


@pytest.mark.parametrize("args", [("--help",), ("init", "--help"), ("genes", "list")])
def test_a_reader_that_goes_away_is_not_reported_as_a_bug(tmp_path: Path,
                                                          args: tuple[str, ...]) -> None:
    """`gd-node ... | head -c 0`: stdout's reader is gone before the command writes. Like
    `ls | head`, the command ends quietly; it used to print "unexpected BrokenPipeError
    ... (a bug ...)" on stderr."""
    init = invoke("init", "--home", str(tmp_path / "n"), "--org", "acme", "--region", "eu",
                  "--seed", "02" * 32)
    assert init.exit_code == 0, init.output
    read, write = os.pipe()
    os.close(read)  # nobody will read: the first write fails with EPIPE
    extra = ("--home", str(tmp_path / "n"), "--json") if args == ("genes", "list") else ()
    try:
        done = subprocess.run([str(GD_NODE), *args, *extra], stdout=write,
                              stderr=subprocess.PIPE, timeout=60, text=True)
    finally:
        os.close(write)
    assert done.returncode == 1
    assert "BrokenPipe" not in done.stderr and "a bug" not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


# -- a daemon whose region has no quorum ------------------------------------------------


@pytest.fixture(scope="module")
def leaderless() -> Iterator[tuple[Home, Path]]:
    """A running voter of a region whose two other voters never start: no leader."""
    root = Path(tempfile.mkdtemp(prefix="gdq", dir="/tmp"))  # short: Unix socket paths
    home = Home(root / "n1")
    try:
        result = invoke("init", "--home", str(home.root), "--org", "acme", "--region",
                        "eu-west", "--seed", "01" * 32)
        assert result.exit_code == 0, result.output
        voters = ", ".join(f'"{key_from_int(n).peer_id}"' for n in (1, 2, 3))
        text = home.config_path.read_text()
        assert "voters = []" in text
        home.config_path.write_text(text.replace("voters = []", f"voters = [{voters}]"))
        proc = subprocess.Popen(
            [str(GD_NODE), "run", "--home", str(home.root), "--log-format", "json"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            status = None
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    status = call(home, "ledger_status", timeout=2.0)
                    if status.get("mode") == "raft" and "role" in status:
                        break
                except ControlError:
                    pass
                time.sleep(0.2)
            assert status is not None and status["mode"] == "raft", status
            assert status.get("leader") is None
            yield home, root
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def import_pending(home: Home, root: Path, name: str) -> str:
    path = root / f"{name}.jsonl"
    path.write_text(json.dumps(dict(GENE, name=name)) + "\n")
    result = invoke("genes", "import", str(path), "--pending", "--home", str(home.root),
                    "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(invoke("genes", "list", "--home", str(home.root), "--json").output)
    return next(g["id"] for g in listed if g["name"] == name)


def test_approve_without_quorum_answers_fast_and_tells_the_truth(
        leaderless: tuple[Home, Path]) -> None:
    home, root = leaderless
    gene_id = import_pending(home, root, "approve-me")
    started = time.monotonic()
    result = invoke("approve", gene_id, "--home", str(home.root))
    took = time.monotonic() - started
    print(f"approve without quorum answered in {took:.2f} s")
    assert result.exit_code == 0, result.output
    assert "approved; the ledger entry is queued until the region has a quorum " \
           "(ledger leader unknown)" in result.output
    assert took < APPROVE_BOUND_S
    shown = json.loads(invoke("genes", "show", gene_id, "--home", str(home.root),
                              "--json").output)
    assert shown["status"] == "native"
    with Cortex.open(home.cortex_path, readonly=True) as cortex:
        queued = OutboxRoute(cortex.env).queued()
    assert any(s.summary.get("gene") == gene_id for s in queued)  # kept for a restart

    other = import_pending(home, root, "approve-me-too")
    data = json.loads(invoke("approve", other, "--home", str(home.root), "--json").output)
    assert data[0]["status"] == "native"
    assert [r["status"] for r in data[0]["ledger"]] == ["queued"]
    assert data[0]["ledger"][0]["reason"] == "ledger leader unknown"


def test_every_command_against_a_daemon_without_quorum(
        leaderless: tuple[Home, Path]) -> None:
    home, root = leaderless
    gene_id = import_pending(home, root, "probe")
    values = Values(root, gene_id)
    ran = assert_no_traceback(values, home.root, LONG_RUNNING - {("run",)})
    assert ran >= 50


def test_ledger_head_explains_entries_beside_the_raft_commit(
        leaderless: tuple[Home, Path]) -> None:
    """Issue 13, item 10: 'entries 10' beside 'commit 9' said nothing of why."""
    home, _root = leaderless
    result = invoke("ledger", "head", "--home", str(home.root))
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "ledger entries" in flat
    assert "commit and applied count Raft log entries" in flat
