"""Opening a node's home for local (daemon-less) use: config, key and Cortex together."""

from __future__ import annotations

from dataclasses import dataclass

from gd.genome.identity import NodeKey
from gd.node.config import ConfigError, NodeConfig, load_config, render_config
from gd.node.home import Home, private_dir, write_private_text
from gd.node.store.cortex import Cortex
from gd.node.store.cortex_owner import claim_if_unstamped, stamp_owner
from gd.node.store.ledger_store import Ledger


class HomeError(RuntimeError):
    """The home directory is missing, half-initialised or unreadable."""


@dataclass
class LocalNode:
    home: Home
    config: NodeConfig
    key: NodeKey
    cortex: Cortex

    def close(self) -> None:
        self.cortex.close()

    def __enter__(self) -> LocalNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def initialise_home(home: Home, cfg: NodeConfig, key: NodeKey) -> None:
    """Create a home: the key (0600, never overwritten), a commented config.toml, and a
    Cortex with the ledger's tables. Refuses a home that already has a key."""
    if home.key_path.exists():
        raise HomeError(f"{home.key_path} already exists: this home is initialised "
                        "(a node key is never overwritten)")
    private_dir(home.root)  # also an existing directory: it may be world-readable
    key.save(home.key_path)
    write_private_text(home.config_path, render_config(cfg))
    with Cortex.open(home.cortex_path, map_size=cfg.cortex_map_size_mb << 20) as cortex:
        Ledger(cortex.env)
        stamp_owner(cortex, key.peer_id)


def load_identity(home: Home) -> tuple[NodeConfig, NodeKey]:
    if not home.is_initialised():
        raise HomeError(f"{home.root} is not a gd-node home: run `gd-node init --home "
                        f"{home.root} --org NAME --region REGION`")
    try:
        config = load_config(home.config_path)
    except ConfigError as exc:
        raise HomeError(str(exc)) from None
    try:
        key = NodeKey.load(home.key_path)
    except (OSError, ValueError) as exc:
        raise HomeError(f"cannot load the node key: {exc}") from None
    return config, key


def open_local(home: Home, *, readonly: bool = False) -> LocalNode:
    config, key = load_identity(home)
    cortex = Cortex.open(home.cortex_path, readonly=readonly,
                         map_size=config.cortex_map_size_mb << 20, create=False)
    claim_if_unstamped(cortex, key.peer_id)  # homes made before the owner stamp
    return LocalNode(home, config, key, cortex)
