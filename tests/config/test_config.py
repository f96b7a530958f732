"""config.toml: written commented by init, parsed strictly, defaults documented truthfully."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields

import pytest

from gd.crdt.conflict import ConflictPolicy
from gd.node.config import (
    ConfigError,
    MeshSettings,
    NodeConfig,
    SyncSettings,
    load_config,
    parse_config,
    render_config,
)
from gd.node.domain_settings import DomainSettings
from gd.node.net.mesh import MeshPolicy
from gd.node.net.peers import PeerLimits
from gd.node.net.streams import HANDSHAKE_TIMEOUT_S
from gd.node.store.sync_store import domain_conflict_policies

CFG = NodeConfig(org="acme", region="eu-west", ledger_voters=("a", "b"), metrics_port=9100)


def test_rendered_config_round_trips() -> None:
    parsed = parse_config(tomllib.loads(render_config(CFG)))
    assert parsed == CFG


def test_commented_examples_parse_and_match_the_code_defaults() -> None:
    text = render_config(CFG)
    uncommented = "\n".join(re.sub(r"^# (\[|\w+ = )", r"\1", line)
                            for line in text.splitlines())
    data = tomllib.loads(uncommented)
    sync = {f.name: f.default for f in fields(SyncSettings)}
    for key, value in data["sync"].items():
        assert sync[key] == value, key
    mesh = {f.name: f.default for f in fields(MeshSettings)}
    for key, value in data["mesh"].items():
        assert mesh[key] == value, key
    assert domain_conflict_policies(data["domains"])("turbofan") == ConflictPolicy()
    parse_config(data)  # the uncommented file is a valid config


@pytest.mark.parametrize(("text", "message"), [
    ("[node]\norg='a'\n", "needs org and region"),
    ("[node]\norg='a'\nregion='eu'\ncolour='red'\n", "unknown key node.colour"),
    ("[nodes]\norg='a'\n", "unknown section"),
    ("[node]\norg='a'\nregion='EU WEST'\n", "node.region"),
    ("[node]\norg='a'\nregion='eu'\n[metrics]\nport=70000\n", "metrics.port"),
    ("[node]\norg='a'\nregion='eu'\nlisten=['tcp/1']\n", "not a multiaddr"),
    ("[node]\norg='a'\nregion='eu'\n[motors]\nbackend='jax'\n", "motors.backend"),
])
def test_bad_configs_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(tomllib.loads(text))


def test_mesh_defaults_are_the_planners_and_the_limits() -> None:
    """MeshSettings restates MeshPolicy's and PeerLimits' defaults: they must not drift."""
    mesh = MeshSettings()
    assert mesh.policy("eu") == MeshPolicy(region="eu")
    assert mesh.limits() == PeerLimits()
    assert mesh.handshake_deadline_s == 3 * HANDSHAKE_TIMEOUT_S


def test_every_section_is_typed() -> None:
    cfg = parse_config(tomllib.loads("""
[node]
org = "a"
region = "eu"
[mesh]
ping_interval_s = 2
seed = 7
[sync]
auto = false
batch_genes = 16
[domains.turbofan]
conflict = "lww"
"""))
    assert cfg.mesh == MeshSettings(ping_interval_s=2.0, seed=7)
    assert isinstance(cfg.mesh.ping_interval_s, float)  # TOML's 2 is read as 2.0
    assert cfg.sync == SyncSettings(auto=False, batch_genes=16)
    assert cfg.domains == {"turbofan": DomainSettings(conflict="lww")}
    assert not hasattr(cfg, "extra")
    with pytest.raises(ConfigError, match=r"config: \[sync\] must be a table"):
        parse_config({"node": {"org": "a", "region": "eu"}, "sync": 3})


@pytest.mark.parametrize(("text", "message"), [
    ('[mesh]\nping_interval_s = "x"\n',
     '[mesh] ping_interval_s: expected a number > 0, got "x"'),
    ("[mesh]\nping_intervall_s = 1\n", "[mesh] ping_intervall_s: unknown key"),
    ("[mesh]\nseed = 1.5\n", "[mesh] seed: expected an integer, got 1.5"),
    ("[mesh]\nmax_streams = 0\n", "[mesh] max_streams: expected an integer >= 1, got 0"),
    ("[mesh]\ntarget_region_peers = 20\n", "[mesh] need 0 <= target_region_peers"),
    ("[mesh]\nbackoff_jitter = 1\n", "[mesh] backoff_jitter: expected a number in [0, 1)"),
    ('[sync]\nauto = "yes"\n', '[sync] auto: expected true or false, got "yes"'),
    ("[sync]\nbatch_genes = 1000\n", "[sync] batch_genes: expected an integer in 1..256"),
    ("[sync]\ninterval_s = true\n", "[sync] interval_s: expected a number > 0, got true"),
    ("[mesh]\nban_s = -1\n", "[mesh] ban_s: expected a number >= 0, got -1"),
    ("[sovereignty]\nx = 1\n", "unknown section [sovereignty]"),
    ("[domains.turbofan]\nconflikt = 'lww'\n", "unknown keys ['conflikt']"),
])
def test_bad_sections_name_the_file_the_section_and_the_key(tmp_path, text: str,
                                                            message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[node]\norg = 'a'\nregion = 'eu'\n" + text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
