"""The node's home directory: where its key, config, Cortex and sockets live.

    HOME/
      node.key        Ed25519 seed, mode 0600 (the node's identity; never overwritten)
      config.toml     commented configuration written by `gd-node init`
      cortex/         the LMDB environment (data.mdb, lock.mdb)
      gd-node.pid     held (flock) by the running daemon; holds its pid
      control.sock    the daemon's control socket (mode 0600)

`$GD_HOME` names the home when `--home` is not given, else `~/.gd-node`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

KEY_FILE = "node.key"
CONFIG_FILE = "config.toml"
CORTEX_DIR = "cortex"
PID_FILE = "gd-node.pid"
CONTROL_SOCKET = "control.sock"


def default_home() -> Path:
    env = os.environ.get("GD_HOME")
    return Path(env).expanduser() if env else Path("~/.gd-node").expanduser()


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, root: str | Path | None) -> Home:
        return cls(Path(root).expanduser().absolute() if root else default_home().absolute())

    @property
    def key_path(self) -> Path:
        return self.root / KEY_FILE

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def cortex_path(self) -> Path:
        return self.root / CORTEX_DIR

    @property
    def pid_path(self) -> Path:
        return self.root / PID_FILE

    @property
    def control_socket(self) -> Path:
        return self.root / CONTROL_SOCKET

    def is_initialised(self) -> bool:
        return self.key_path.exists() and self.config_path.exists()
