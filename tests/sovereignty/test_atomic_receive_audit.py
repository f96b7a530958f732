"""A received gene and its `gene_received` audit record commit in ONE LMDB transaction
(ADR 0040): the puller's group commit and the repair fetch write the view's records
inside the transaction that stores the genes, so a kill -9 (or any failure) between
"stored" and "audited" cannot happen. And a batch of N audit records reads the log's
tail once, with stored bytes identical to N one-by-one appends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lmdb
import pytest
import trio
from atomic_audit_node import (
    AGREED,
    BOB,
    STORE_REFUSES,
    B,
    Service,
    batches,
    pull_one_group,
    received_ids,
    receiver,
)
from gd_testkit import make_gene

from gd.node.services import repair_fetch
from gd.node.services.sovereignty_views import SovereignReceiverView
from gd.node.services.sync_group import commit_audited
from gd.node.services.sync_state import RoundStats
from gd.node.store.audit import AUDIT_DB, AuditKind, AuditLog
from gd.node.store.cortex import Cortex
from gd.protocol.repair import FetchedVersions
from gd.protocol.sovereignty import ShareDecision

HERE = Path(__file__).parent
T0 = 1_700_000_000_000


def stored(cortex: Cortex) -> set[str]:
    return {g.id for g in cortex.genes()}


def test_a_group_and_its_audit_records_commit_together(tmp_path: Path) -> None:
    cortex, store, view, group = receiver(tmp_path / "c")
    applied = pull_one_group(store, view, group)
    assert [s.applied for s in applied] == [10, 10]
    audit = view._service.audit  # type: ignore[attr-defined]
    assert received_ids(audit) == stored(cortex) and len(stored(cortex)) == 20
    refused = {r.gene_id: r.detail["reason"] for r in audit.records(
        kind=AuditKind.GENE_REFUSED)}
    by_name = {g.name: g.id for genes in batches() for g in genes}
    # The store's refusal keeps the store's reason; the view's its own.
    assert refused[by_name[STORE_REFUSES]] == "not valid in its domain pack: test"
    assert "other-domain" in by_name and by_name["other-domain"] in refused
    assert len(refused) == 2 and audit.verify().ok
    assert cortex.get_checkpoint(BOB.peer_id) == 22


def test_a_failing_audit_write_stores_no_gene_and_moves_no_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cortex, store, view, group = receiver(tmp_path / "c")

    def broken(*args: Any, **kwargs: Any) -> int:
        raise OSError("disk gone while auditing")

    monkeypatch.setattr(AuditLog, "received_in", broken)
    monkeypatch.setattr(AuditLog, "record_received", broken)
    with pytest.raises(OSError, match="disk gone"):
        pull_one_group(store, view, group)
    assert stored(cortex) == set() and cortex.get_checkpoint(BOB.peer_id) == 0
    assert len(view._service.audit) == 0  # type: ignore[attr-defined]
    # The batches stay staged and the view keeps what it judged: a retry audits them.
    monkeypatch.undo()
    commit_audited(lambda audit: [s for _, s in group.commit(audit)], view)
    assert len(stored(cortex)) == 20
    assert received_ids(view._service.audit) == stored(cortex)  # type: ignore[attr-defined]


def test_sigkill_while_writing_gene_received_records_leaves_no_unaudited_gene(
        tmp_path: Path) -> None:
    path = tmp_path / "c"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent / "support"), str(HERE), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, str(HERE / "atomic_audit_node.py"), str(path)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
    cortex = Cortex.open(path)
    try:
        audit = AuditLog(cortex)
        assert stored(cortex) <= received_ids(audit)  # every stored gene is audited
        assert stored(cortex) == set() and cortex.get_checkpoint(BOB.peer_id) == 0
        assert audit.verify().ok
    finally:
        cortex.close()


class Metric:
    def labels(self, **kw: str) -> Metric:
        return self

    def inc(self, n: int = 1) -> None:
        self.n = getattr(self, "n", 0) + n


class RepairService:
    """What `repair_fetch._apply_group` uses of `SyncService`, over a real store."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.on_received = None
        self.log = self
        self.metrics = type("M", (), {"sync_genes": Metric(), "sync_conflicts": Metric(),
                                      "sync_rejected": Metric()})()

    def notify_local_change(self, source: str | None = None) -> None:
        pass

    def warning(self, event: str, **kw: Any) -> None:
        pass


def test_repair_fetch_applies_and_audits_in_one_transaction(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cortex, store, view, _ = receiver(tmp_path / "c")
    genes = [g for batch in batches() for g in batch]
    fetched = FetchedVersions(tuple(genes), (), 0)
    svc = RepairService(store)

    def broken(*args: Any, **kwargs: Any) -> int:
        raise OSError("disk gone while auditing")

    with monkeypatch.context() as patch:
        patch.setattr(AuditLog, "received_in", broken)
        patch.setattr(AuditLog, "record_received", broken)
        with pytest.raises(OSError):
            trio.run(repair_fetch._apply_group, svc, view, B.peer_id, [fetched],
                     RoundStats(B.peer_id))
    assert stored(cortex) == set()
    view = SovereignReceiverView(Service(cortex), BOB)  # type: ignore[arg-type]
    stats = RoundStats(B.peer_id)
    trio.run(repair_fetch._apply_group, svc, view, B.peer_id, [fetched], stats)
    assert stats.repaired == 20 and received_ids(view._service.audit) == stored(cortex)


# -- one tail read a batch, same bytes -----------------------------------------------


def judged(n: int) -> list[tuple[Any, ShareDecision]]:
    """`n` genes from Bob with the decision our policy gives each."""
    genes = [make_gene(B, f"g-{i:03d}") for i in range(n)]
    return [(g, AGREED.allowed_to_receive(g, B.peer_id, "bobco", "eu-west")) for g in genes]


def raw_log(cortex: Cortex) -> list[tuple[bytes, bytes]]:
    with cortex.env.begin() as txn:
        return list(txn.cursor(db=cortex.open_db(AUDIT_DB)))


def test_batched_records_are_byte_identical_and_read_the_tail_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = judged(40)
    refused = [(make_gene(B, f"no-{i}", domain="pump"), ShareDecision(False, "no rule"))
               for i in range(3)]
    one = Cortex.open(tmp_path / "one")
    log_one = AuditLog(one)
    log_one.append("policy_change", rule="r1", time_ms=T0)
    for kind, pairs in ((AuditKind.GENE_RECEIVED, items), (AuditKind.GENE_REFUSED, refused)):
        for gene, decision in pairs:
            log_one.append(kind, peer=B.peer_id, gene_id=gene.id,
                           version_hash=gene.version_hash, direction="in",
                           rule=decision.rule_id,
                           detail={} if decision.allowed else {"reason": decision.reason},
                           time_ms=T0)
    many = Cortex.open(tmp_path / "many")
    log_many = AuditLog(many)
    log_many.append("policy_change", rule="r1", time_ms=T0)
    tails = 0
    tail = AuditLog._tail

    def counted(self: AuditLog, txn: Any) -> Any:
        nonlocal tails
        tails += 1
        return tail(self, txn)

    monkeypatch.setattr(AuditLog, "_tail", counted)
    assert log_many.record_received(B.peer_id, items, refused, time_ms=T0) == 43
    assert tails == 1
    assert raw_log(many) == raw_log(one) and len(raw_log(one)) == 44
    assert log_many.verify().ok and log_many.head() == log_one.head()


def test_a_map_full_retry_writes_each_record_once(tmp_path: Path) -> None:
    """`Cortex.write` runs the group again after growing the map: the view's `audit_in`
    must not have spent its judgements on the aborted try."""
    cortex, store, view, group = receiver(tmp_path / "c")
    audit_in, tries = view.audit_in, []

    def full_once(txn: Any, refused: Any) -> int:
        n = audit_in(txn, refused)
        tries.append(n)
        if len(tries) == 1:
            raise lmdb.MapFullError("the map is full")
        return n

    view.audit_in = full_once  # type: ignore[method-assign]
    pull_one_group(store, view, group)
    audit = view._service.audit  # type: ignore[attr-defined]
    assert tries == [22, 22] and len(audit) == 22 and audit.verify().ok
    assert received_ids(audit) == stored(cortex) and len(stored(cortex)) == 20
