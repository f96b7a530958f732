"""The backfill of a new agreement runs after the feed pull, so no gene travels twice.

Genes stored before an agreement sit behind the peer's checkpoint on our feed; only an
anti-entropy round brings them. Genes stored after the receiver's last pull the feed
brings anyway. The backfill used to start its round at once, beside the pull the same
agreement set off: both fetched the genes after the checkpoint (in the two-process cold
sync, most of 100k genes went twice; each copy was verified, judged and audited as sent).
Now it asks the peer loop to reconcile right after its next pull
(`SyncService.repair_after_pull`): the pull brings what follows the checkpoint, the round
only what the feed passed. The sender's audit log shows it: one `gene_sent` record per
gene, none twice."""

from __future__ import annotations

from collections import Counter

import trio
from gd_testkit import key_from_int, make_gene

from gd.node.store.audit import AuditKind

K1 = key_from_int(1)
BEHIND, AFTER = 120, 480  # behind b's checkpoint on a's feed / stored after it
# Small batches keep b's pull of the AFTER genes going for dozens of round trips, as a
# big feed does: long enough for a round started beside it to ask for them too.
SLOW_PULL = {"debounce_s": 0.05, "batch_genes": 8}


def genes(tag: str, n: int):
    return [make_gene(K1, f"turbofan-{tag}{i}", "turbofan", threshold=40.0 + i)
            for i in range(n)]


def record_rounds(d, log: list[tuple[str, float]]) -> None:
    """Wrap `d`'s pull, reconcile and backfill to log when each starts and ends."""
    def wrap(obj, name: str, is_async: bool) -> None:
        inner = getattr(obj, name)
        if is_async:
            async def timed(*args, **kwargs):
                log.append((f"{name}-start", trio.current_time()))
                try:
                    return await inner(*args, **kwargs)
                finally:
                    log.append((f"{name}-end", trio.current_time()))
            setattr(obj, name, timed)
        else:
            def noted(*args, **kwargs):
                log.append((name, trio.current_time()))
                return inner(*args, **kwargs)
            setattr(obj, name, noted)

    wrap(d.sync, "pull", True)
    wrap(d.sync, "reconcile", True)
    wrap(d.sovereignty, "backfill", False)


async def test_a_new_agreement_sends_each_gene_once(fed):
    async with trio.open_nursery() as nursery:
        a = await fed.start_daemon(nursery, 1, region="eu", sync=SLOW_PULL)
        behind = genes("behind", BEHIND)
        a.cortex.put_genes(behind)
        b = await fed.start_daemon(nursery, 2, region="eu", sync=SLOW_PULL, boot=[a])
        rounds: list[tuple[str, float]] = []
        record_rounds(b, rounds)  # before its peer loop's first pull
        await fed.connected(a, b)
        [stats] = await b.sync.sync_now(a.peer_id)  # nothing shared: all filtered out
        assert stats.genes_in == 0 and b.cortex.get_checkpoint(a.peer_id) == a.cortex.last_seq
        after = genes("after", AFTER)
        a.cortex.put_genes(after)  # after b's checkpoint: the feed's to bring

        await fed.share(a, b, "turbofan")
        await fed.share(b, a, "turbofan")
        want = {g.id for g in behind + after}
        with trio.fail_after(60):
            while set(fed.from_peer(b, a)) != want:
                await trio.sleep(0.05)
        await trio.sleep(0.5)  # any second copy still on its way lands meanwhile
        sent = Counter(r.gene_id for r in a.sovereignty.audit.records(kind=AuditKind.GENE_SENT)
                       if r.peer == b.peer_id)
        assert set(sent) == want
        assert [g for g, n in sent.items() if n > 1] == []  # none sent twice
        assert a.sovereignty.audit.verify().ok and b.sovereignty.audit.verify().ok
        # The mechanism: b's backfill round starts only once a pull has ended after
        # the backfill was asked for, never beside that pull.
        asked = next(t for what, t in rounds if what == "backfill")
        first_round = next(t for what, t in rounds if what == "reconcile-start" and t >= asked)
        assert any(what == "pull-end" and asked <= t <= first_round for what, t in rounds)
        fed.stop_all(a, b)
