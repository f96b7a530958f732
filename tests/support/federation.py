"""Daemons that enforce sovereignty, for the network suites that need agreements
(tests/sovereignty_net, tests/adversarial): in-process, on 127.0.0.1, each with its own
Cortex, no share-all switch — what moves between them is what their agreements allow."""

from __future__ import annotations

import trio
from daemon_cluster import DaemonCluster

from gd.node.daemon import Daemon
from gd.node.store.audit import AuditKind
from gd.node.store.policy_store import rule_from_options

# Automatic sync with a short debounce: genes follow agreements without `sync now`.
FAST_SYNC = {"debounce_s": 0.05}


class Federation(DaemonCluster):
    """Daemons that enforce their agreements (sync on, short debounce)."""

    async def start(self, nursery: trio.Nursery, n: int, *, boot: list[Daemon] = (),
                    region: str = "eu") -> Daemon:
        return await self.start_daemon(nursery, n, region=region, sync=FAST_SYNC, boot=boot)

    @staticmethod
    async def share(d: Daemon, other: Daemon, domain: str, **options: bool) -> None:
        """What `gd-node share --with OTHER --domain D` does beside a running daemon (in a
        worker thread: the daemon's ledger route is called from threads)."""
        sov = d.sovereignty
        rule = rule_from_options(other.peer_id, domain, **options)
        await trio.to_thread.run_sync(lambda: sov.store.share(rule, ledger=sov.ledger))
        sov.policy_changed()

    @staticmethod
    def from_peer(d: Daemon, origin: Daemon, domain: str | None = None) -> dict[str, object]:
        """Genes `d` holds whose origin is `origin`: id -> gene."""
        return {g.id: g for g in d.cortex.genes(origin=origin.peer_id, domain=domain)}

    @staticmethod
    def audited(d: Daemon, kind: str, peer: Daemon) -> set[str]:
        """Gene ids in `d`'s audit records of `kind` about `peer`."""
        return {r.gene_id for r in d.sovereignty.audit.records(kind=kind)
                if r.peer == peer.peer_id}

    SENT = AuditKind.GENE_SENT
    RECEIVED = AuditKind.GENE_RECEIVED
