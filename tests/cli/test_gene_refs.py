"""Issue 13, item 8: every command that takes a gene id accepts a unique prefix or
`domain/name`, and an ambiguous prefix is a clear error listing the candidates."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from cli_runner import run_cli as run
from gd_testkit import key_from_int

from gd.cli.main import cli
from gd.genome.gene import gene_id_for

HOT = {"domain": "turbofan", "name": "inspect-when-hot", "action": "inspect",
       "codons": [{"feature": "s11", "op": ">", "threshold": 47.6}]}


def twins(peer_id: str) -> tuple[str, str, str]:
    """Two gene names whose ids (for this origin) share their first 4 characters, and
    that prefix: found by a bounded, deterministic search."""
    seen: dict[str, str] = {}
    for i in range(5000):
        name = f"twin-{i}"
        prefix = gene_id_for(peer_id, "turbofan", name)[:4]
        if prefix in seen:
            return seen[prefix], name, prefix
        seen[prefix] = name
    raise AssertionError("no shared prefix in 5000 names")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    assert run("init", "--home", str(h), "--org", "acme", "--region", "eu-west",
               "--seed", (1).to_bytes(32, "big").hex())[0] == 0
    first, second, _ = twins(key_from_int(1).peer_id)
    rows = [HOT, dict(HOT, name=first), dict(HOT, name=second)]
    path = tmp_path / "g.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out = run("genes", "import", str(path), "--pending", "--home", str(h))
    assert code == 0, out
    return h


def gene_id(home: Path, name: str) -> str:
    listed = json.loads(run("genes", "list", "--home", str(home), "--json")[1])
    return next(g["id"] for g in listed if g["name"] == name)


def test_prefix_and_domain_name_reach_the_same_gene(home: Path) -> None:
    full = gene_id(home, "inspect-when-hot")
    for ref in (full, full[:6], "turbofan/inspect-when-hot"):
        code, out = run("genes", "show", ref, "--home", str(home), "--json")
        assert code == 0, (ref, out)
        assert json.loads(out)["id"] == full
    code, out = run("pending", "show", full[:8], "--home", str(home), "--json")
    assert code == 0 and json.loads(out)["original"]["id"] == full
    code, out = run("approve", "turbofan/inspect-when-hot", "--home", str(home))
    assert code == 0 and f"{full}: native" in out
    code, out = run("policy", "test", "--with", "org:globex", "--org", "globex",
                    "--gene", full[:5], "--home", str(home))
    assert code == 1 or full in out  # no known peer is fine; the gene itself resolved
    assert "no gene" not in out


def test_an_ambiguous_prefix_lists_the_candidates(home: Path) -> None:
    first, second, prefix = twins(key_from_int(1).peer_id)
    code, out = run("genes", "show", prefix, "--home", str(home))
    assert code == 1
    assert f"gene id prefix {prefix!r} is ambiguous" in out
    assert f"{gene_id(home, first)} (turbofan/{first})" in out
    assert f"{gene_id(home, second)} (turbofan/{second})" in out
    code, out = run("approve", prefix, "--home", str(home))
    assert code == 1 and "ambiguous" in out
    listed = json.loads(run("pending", "list", "--home", str(home), "--json")[1])
    assert len(listed) == 3  # nothing was approved


def test_an_unknown_ref_still_says_no_gene(home: Path) -> None:
    code, out = run("genes", "show", "turbofan/nope", "--home", str(home))
    assert code == 1 and "no gene 'turbofan/nope'" in out


def test_every_command_taking_a_gene_id_resolves_it() -> None:
    """No command declares a gene id parameter without the shared resolver."""
    missing = []

    def walk(cmd: click.Command, path: tuple[str, ...]) -> None:
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)  # list_commands, not .commands: lazy ones too
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None, (path, name)
                walk(sub, (*path, name))
            return
        for param in cmd.params:
            is_gene = param.name in ("gene_id", "source", "target", "variant") and \
                not (isinstance(param, click.Option) and param.name == "target")
            if is_gene and param.name not in getattr(cmd.callback, "gene_refs", ()):
                missing.append((" ".join(path), param.name))

    walk(cli, ())
    assert missing == []
