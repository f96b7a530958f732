"""The node's home directory: where its key, config, Cortex and sockets live.

    HOME/
      node.key        Ed25519 seed, mode 0600 (the node's identity; never overwritten)
      config.toml     commented configuration written by `gd-node init`
      cortex/         the LMDB environment (data.mdb, lock.mdb)
      gd-node.pid     held (flock) by the running daemon; holds its pid
      control.sock    the daemon's control socket (mode 0600)

`$GD_HOME` names the home when `--home` is not given, else `~/.gd-node`.

Everything in a home, and every backup, is private to the node's user: directories
0700, files 0600. The modes are set explicitly with chmod after creation, so they do
not depend on the umask of whoever ran `gd-node` (a umask of 0 would otherwise leave the
Cortex, its genes and agreements, readable by every local user).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

KEY_FILE = "node.key"
CONFIG_FILE = "config.toml"
CORTEX_DIR = "cortex"
PID_FILE = "gd-node.pid"
CONTROL_SOCKET = "control.sock"


PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) if needed and make it 0700, umask or not;
    an existing directory is tightened too (`init` into a world-readable folder)."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


def make_private(path: Path) -> None:
    """chmod `path` and everything below it: directories 0700, files 0600 (links and
    sockets are left alone: a socket sets its own mode, a link is not ours to follow)."""
    mode = os.lstat(path).st_mode
    if stat.S_ISDIR(mode):
        os.chmod(path, PRIVATE_DIR_MODE)
        for child in path.iterdir():
            make_private(child)
    elif stat.S_ISREG(mode):
        os.chmod(path, PRIVATE_FILE_MODE)


def write_private_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (temporary file, fsync, rename) with mode 0600
    from the first byte: the temporary file is never readable by others either."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


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
