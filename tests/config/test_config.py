"""config.toml: written commented by init, parsed strictly, defaults documented truthfully."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields

import pytest

from gd.crdt.conflict import ConflictPolicy
from gd.node.config import ConfigError, NodeConfig, parse_config, render_config
from gd.node.daemon import HANDSHAKE_DEADLINE_S, PING_INTERVAL_S
from gd.node.net.mesh import MeshPolicy
from gd.node.net.peers import PeerLimits
from gd.node.services.sync_service import SyncSettings
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
    mesh = {f.name: f.default for f in fields(MeshPolicy)} | {
        f.name: f.default for f in fields(PeerLimits)} | {"ping_interval_s": PING_INTERVAL_S,
                                                          "handshake_deadline_s":
                                                          HANDSHAKE_DEADLINE_S}
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
