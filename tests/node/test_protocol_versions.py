"""Wire protocol ids carry versions: a peer asking for one this node does not speak is
refused at stream negotiation, and the refusal names the protocol (issue 17)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import trio
from daemon_cluster import LOOPBACK, launch
from gd_testkit import key_from_int
from libp2p.custom_types import TProtocol
from libp2p.host.exceptions import StreamFailure

from gd.node.config import MeshSettings, NodeConfig
from gd.node.home import Home
from gd.node.net.host import dialable_addrs, peer_info, running_host, to_id
from gd.node.services.sync_service import SYNC_PROTOCOL_ID
from gd.protocol.handshake import PROTOCOL_ID as HANDSHAKE_PROTOCOL_ID

FAST = {"backoff_base_s": 0.2, "backoff_max_s": 1.0, "ping_interval_s": 0.5}


def next_major(protocol_id: str) -> str:
    """`/gd/sync/1.0.0` -> `/gd/sync/2.0.0`: a version no build of ours speaks yet."""
    base, _, version = protocol_id.rpartition("/")
    return f"{base}/{int(version.split('.')[0]) + 1}.0.0"


@pytest.fixture
def home():
    root = Path(tempfile.mkdtemp(prefix="gdv", dir="/tmp"))  # short: a Unix socket path
    (root / "a").mkdir()
    yield Home(root / "a")
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("current", [SYNC_PROTOCOL_ID, HANDSHAKE_PROTOCOL_ID])
async def test_unknown_protocol_version_is_refused_by_name(home, current) -> None:
    newer = next_major(current)
    cfg = NodeConfig(org="org1", region="eu", mesh=MeshSettings(**FAST))
    async with trio.open_nursery() as nursery:
        daemon = await launch(nursery, home, cfg, key_from_int(1))
        async with running_host(key_from_int(30), LOOPBACK) as host:
            await host.connect(peer_info(daemon.peer_id, dialable_addrs(daemon.host)))
            with trio.fail_after(20):
                with pytest.raises(StreamFailure) as refused:
                    await host.new_stream(to_id(daemon.peer_id), [TProtocol(newer)])
                if current == HANDSHAKE_PROTOCOL_ID:  # served to anyone, unlike sync
                    # The version this build speaks still opens on the same connection.
                    stream = await host.new_stream(to_id(daemon.peer_id),
                                                   [TProtocol(current)])
                    await stream.reset()
        assert f"protocol not supported: {newer}" in str(refused.value.__cause__)
        daemon.stop()
