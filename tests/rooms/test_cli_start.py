"""A CLI command starts without the daemon's network stack (issue 15: every `gd-node`
command, and each of the two `share` calls of a cold sync, paid ~0.5 s for libp2p and
~0.1 s for trio that a command talking to the daemon over its control socket never
uses). The bootstrap file's parser (`gd.node.net.bootstrap_file`) and the control
socket's client (`gd.node.control`) live apart from the DHT and the trio server."""

from __future__ import annotations

import json
import subprocess
import sys

NOT_FOR_THE_CLI = ("libp2p", "trio", "multiaddr")


def test_the_cli_imports_neither_libp2p_nor_trio():
    probe = ("import json, sys; import gd.cli.main; "
             f"print(json.dumps(sorted(m for m in {NOT_FOR_THE_CLI!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True)
    assert json.loads(out.stdout) == []


def test_the_daemon_still_has_them():
    """The split moved code, it did not lose it: the daemon's module loads both."""
    probe = ("import json, sys; import gd.node.daemon; "
             f"print(json.dumps(sorted(m for m in {NOT_FOR_THE_CLI!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True)
    assert json.loads(out.stdout) == sorted(NOT_FOR_THE_CLI)
