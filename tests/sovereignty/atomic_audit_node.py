"""A receiver that applies one group of pulled batches the way `FeedPuller.pull` does
(`GroupCommit` + `commit_audited`, real LMDB, the sovereign receiver view, the real
audit log); shared by tests/sovereignty/test_atomic_receive_audit.py and, as a script,
the child process that test kills with SIGKILL while the group's audit records are
being written.

    python atomic_audit_node.py CORTEX_DIR   # applies the group; dies on the first
                                             # gene_received record it hashes
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from gd_testkit import key_from_int, make_gene

from gd.genome.gene import Gene
from gd.node.services.sovereignty_views import SovereignReceiverView
from gd.node.services.sync_group import GroupCommit, commit_audited
from gd.node.store import audit as audit_module
from gd.node.store.audit import AuditKind, AuditLog
from gd.node.store.cortex import Cortex
from gd.node.store.sync_store import ApplyStats, SyncStore
from gd.protocol.policy_rules import PeerInfo, ShareRule, Subject
from gd.protocol.sovereignty import PolicySet

A, B = key_from_int(51), key_from_int(52)
ME = PeerInfo(A.peer_id, "acme", "eu-west")
BOB = PeerInfo(B.peer_id, "bobco", "eu-west")
# Bob may send us turbofan genes; we take them (both sides of an agreement).
AGREED = PolicySet(ME, (ShareRule(Subject.parse(f"peer:{B.peer_id}"), "turbofan"),), (),
                   {B.peer_id: (ShareRule(Subject.parse("org:acme"), "turbofan"),)})
STORE_REFUSES = "store-refuses"  # the name of the gene the store's content check refuses


def content_check(gene: Gene) -> str:
    return "not valid in its domain pack: test" if gene.name == STORE_REFUSES else ""


class Service:
    """What `SovereignReceiverView` reads from `SovereigntyService`."""

    def __init__(self, cortex: Cortex) -> None:
        self.store = self
        self.audit = AuditLog(cortex)

    def policies(self) -> PolicySet:
        return AGREED


def batches() -> list[list[Gene]]:
    """Two batches from Bob: one gene the store refuses, one in another domain (the
    view refuses it: no rule covers it)."""
    first = [make_gene(B, f"bob-{i:02d}") for i in range(10)]
    first.append(make_gene(B, STORE_REFUSES))
    second = [make_gene(B, f"bob-{i:02d}") for i in range(10, 20)]
    second.append(make_gene(B, "other-domain", domain="pump"))
    return [first, second]


def receiver(path: Any) -> tuple[Cortex, SyncStore, SovereignReceiverView, GroupCommit]:
    cortex = Cortex.open(path)
    store = SyncStore(cortex, local_peer=A.peer_id, content_check=content_check)
    view = SovereignReceiverView(Service(cortex), BOB)  # type: ignore[arg-type]
    return cortex, store, view, GroupCommit(store, lambda: 0.0)


def pull_one_group(store: SyncStore, view: SovereignReceiverView, group: GroupCommit
                   ) -> list[ApplyStats]:
    """What `FeedPuller.pull` does with a pulled group: judge, stage, commit, audit."""
    upto = 0
    for genes in batches():
        view.begin_batch()
        good = [g for g in genes if view.accept(g)]
        upto += len(genes)
        group.stage(BOB.peer_id, good, upto)
    return commit_audited(lambda audit: [s for _, s in group.commit(audit)], view)


def received_ids(audit: AuditLog) -> set[str]:
    return {r.gene_id for r in audit.records(kind=AuditKind.GENE_RECEIVED)}


def _die_on_received_record() -> None:
    hash_ = audit_module.body_hash  # what an append hashes each record with

    def body_hash(prev: bytes, body: Any, encoded: bytes) -> bytes:
        if body.get("kind") == AuditKind.GENE_RECEIVED:
            os.kill(os.getpid(), signal.SIGKILL)
        return hash_(prev, body, encoded)

    audit_module.body_hash = body_hash  # type: ignore[assignment]


if __name__ == "__main__":
    _, store_, view_, group_ = receiver(sys.argv[1])
    _die_on_received_record()
    pull_one_group(store_, view_, group_)
    sys.exit(3)  # not reached: the process dies writing its first gene_received record
