"""Change-feed sync and anti-entropy between daemons over real libp2p on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner
from gd_testkit import key_from_int, make_gene

from gd.cli.main import cli
from gd.genome import GeneStatus, canonical
from gd.node.config import ConfigError, NodeConfig, parse_config
from gd.node.control import call
from gd.node.services.sync_group import MAX_GROUP_BATCHES
from gd.node.services.sync_service import SyncSettings, sync_settings
from gd.protocol.sync_frames import SyncBatch
from gd.protocol.sync_messages import ChangeBatch

K1, K2, K3 = (key_from_int(n) for n in (1, 2, 3))


async def small_batch_pair(c, nursery: trio.Nursery):
    """Nodes 1 and 2 sharing everything, syncing when a test says, B pulling batches of
    10 genes (a round of 100 genes is 10 batches, a group 8 of them), connected."""
    a = await c.start(nursery, 1, sync=c.MANUAL, share_all=True)
    b = await c.start(nursery, 2, sync={**c.MANUAL, "batch_genes": 10}, share_all=True,
                      boot=[a])
    await c.connected(a, b)
    return a, b


async def test_two_daemons_converge_on_connect_and_on_local_change(cluster):
    c = cluster
    async with trio.open_nursery() as nursery:
        a = await c.start(nursery, 1, sync=c.SHARE_ALL, share_all=True)
        a.cortex.put_genes([make_gene(K1, f"a{i}") for i in range(40)])
        b = await c.start(nursery, 2, sync=c.SHARE_ALL, share_all=True, boot=[a])
        await c.connected(a, b)
        await c.until(lambda: len(c.contents(b)) == 40)  # pulled on connect
        b.cortex.put_genes([make_gene(K2, f"b{i}") for i in range(5)])
        b.sync.notify_local_change()  # as the daemon's writers do: hint -> a pulls
        await c.until(lambda: c.contents(a) == c.contents(b) and len(c.contents(a)) == 45)
        assert {g.status for g in b.cortex.genes(origin=K1.peer_id)} == {
            GeneStatus.ADAPTATION_PENDING}
        # Echo suppression: b's genes never travel back to their author, and vice versa.
        assert a.sync.state(b.peer_id).served.genes == 40
        assert b.sync.state(a.peer_id).served.genes == 5
        c.stop_all(a, b)


async def test_three_daemons_converge_on_the_union(cluster):
    c = cluster
    keys = {1: K1, 2: K2, 3: K3}
    async with trio.open_nursery() as nursery:
        a = await c.start(nursery, 1, sync=c.SHARE_ALL, share_all=True)
        b = await c.start(nursery, 2, sync=c.SHARE_ALL, share_all=True, boot=[a])
        d = await c.start(nursery, 3, sync=c.SHARE_ALL, share_all=True, boot=[b])
        nodes = {1: a, 2: b, 3: d}
        for n, node in nodes.items():
            node.cortex.put_genes([make_gene(keys[n], f"g{n}-{i}") for i in range(10)])
        await c.until(lambda: all(len(c.contents(x)) == 30 for x in nodes.values()), 30)
        assert c.contents(a) == c.contents(b) == c.contents(d)
        c.stop_all(a, b, d)


async def test_concurrent_edits_queue_on_both_sides_and_a_resolution_settles_both(cluster):
    c = cluster
    async with trio.open_nursery() as nursery:
        a, b = await c.manual_pair(nursery)
        gene = make_gene(K1, "shared")
        a.cortex.put_gene(gene)
        await a.sync.sync_now(b.peer_id)
        assert b.cortex.get_gene(gene.id).version_hash == gene.version_hash
        a.cortex.put_gene(gene.edited(K1, hlc=2 << 16, purpose="a-edit"))
        b.cortex.put_gene(gene.edited(K2, hlc=3 << 16, purpose="b-edit"))
        [stats] = await a.sync.sync_now(b.peer_id)
        assert stats.conflicts == 1 and stats.errors == []
        for node, theirs in ((a, "b-edit"), (b, "a-edit")):
            [conflict] = node.sync.store.conflicts()
            assert conflict.remote.purpose == theirs
            assert node.cortex.get_gene(gene.id).purpose != theirs  # nothing overwritten
        key = a.sync.store.conflicts()[0].key
        out = await trio.to_thread.run_sync(lambda: CliRunner().invoke(cli, [
            "conflicts", "resolve", key, "--keep", "remote", "--json",
            "--home", str(a.home.root)]))
        assert out.exit_code == 0, out.output
        result = json.loads(out.output)
        assert (result["version"], result["via"]) == (3, "daemon")
        [stats] = await b.sync.sync_now(a.peer_id)
        assert stats.genes_in == 1
        for node in (a, b):
            head = node.cortex.get_gene(gene.id)
            assert head.purpose == "b-edit" and head.vv == {K1.peer_id: 3, K2.peer_id: 1}
            assert node.sync.store.conflicts() == []  # settled on both sides
        c.stop_all(a, b)


async def test_interrupted_pull_resumes_without_resending_applied_batches(cluster):
    c = cluster
    async with trio.open_nursery() as nursery:
        a, b = await small_batch_pair(c, nursery)
        a.cortex.put_genes([make_gene(K1, f"g{i}") for i in range(100)])
        original = b.sync.store.apply_batches
        committed = 0
        with trio.CancelScope() as scope:
            def cut_after_first_group(batches):
                nonlocal committed
                stats = original(batches)
                committed += len(batches)
                trio.from_thread.run_sync(scope.cancel)  # the link drops here
                return stats

            b.sync.store.apply_batches = cut_after_first_group
            await b.sync.pull(a.peer_id)
        # Verified batches commit several per transaction (group commit, ADR 0032);
        # the checkpoint covers exactly the genes of the batches committed.
        assert scope.cancelled_caught and 1 <= committed < 10
        assert b.cortex.get_checkpoint(a.peer_id) == 10 * committed
        assert len(c.contents(b)) == 10 * committed
        b.sync.store.apply_batches = original
        stats = await b.sync.pull(a.peer_id)
        assert stats.genes_in == 100 - 10 * committed and stats.batches == 10 - committed
        # No applied batch is sent twice: the second round starts at the checkpoint.
        # The pull is pipelined (ADR 0058): while a group commits, the round reads,
        # opens and checks up to a group's worth of the batches after it, with one more
        # asked for; those, never applied, may have been served and are served again.
        again = a.sync.state(b.peer_id).served.genes - 100
        assert again % 10 == 0 and 0 <= again <= 10 * (MAX_GROUP_BATCHES + 1)
        assert c.contents(a) == c.contents(b)
        c.stop_all(a, b)


async def test_a_cut_round_commits_the_batches_it_verified_but_had_not_committed(cluster):
    c = cluster
    async with trio.open_nursery() as nursery:
        a, b = await small_batch_pair(c, nursery)
        a.cortex.put_genes([make_gene(K1, f"g{i}") for i in range(100)])
        check, checked = b.sync.verify_pool, 0
        with trio.CancelScope() as scope:
            def cut_after_three(wires):
                nonlocal checked
                out = check(wires)
                checked += 1
                if checked == 3:
                    trio.from_thread.run_sync(scope.cancel)  # the link drops here
                return out

            b.sync.verify_pool = cut_after_three
            await b.sync.pull(a.peer_id)
        b.sync.verify_pool = check
        # Three batches verified and staged (a group of 8 was not due): the cut round
        # commits them with their checkpoint rather than dropping checked work.
        assert scope.cancelled_caught and checked == 3
        assert b.cortex.get_checkpoint(a.peer_id) == 30 and len(c.contents(b)) == 30
        stats = await b.sync.pull(a.peer_id)
        assert stats.genes_in == 70 and c.contents(a) == c.contents(b)
        c.stop_all(a, b)


async def test_tampered_gene_is_rejected_and_the_rest_of_the_batch_applies(cluster):
    c = cluster
    async with trio.open_nursery() as nursery:
        a, b = await c.manual_pair(nursery)
        genes = [make_gene(K1, f"g{i}") for i in range(10)]
        a.cortex.put_genes(genes)
        honest = a.sync.read_feed

        def tampering_feed(since, limit):
            return [(seq, dataclasses.replace(g, name="evil") if g.name == "g3" else g)
                    for seq, g in honest(since, limit)]

        a.sync.read_feed = tampering_feed
        stats = await b.sync.pull(a.peer_id)
        assert (stats.genes_in, stats.rejected) == (9, 1)
        assert genes[3].id not in c.contents(b) and len(c.contents(b)) == 9
        assert b.metrics.registry.get_sample_value("gd_sync_rejected_total") == 1
        c.stop_all(a, b)


async def test_default_policy_shares_nothing(cluster):
    c = cluster
    async with trio.open_nursery() as nursery:
        a = await c.start(nursery, 1)
        b = await c.start(nursery, 2, boot=[a])
        await c.connected(a, b)
        a.cortex.put_genes([make_gene(K1, f"g{i}") for i in range(20)])
        [stats] = await b.sync.sync_now(a.peer_id, repair=True)
        assert stats.errors == [] and stats.genes_in == 0 and stats.repaired == 0
        assert c.contents(b) == {}
        assert b.cortex.get_checkpoint(a.peer_id) == 20  # the feed position still moves
        assert a.sync.state(b.peer_id).served.genes == 0
        a.sync.set_share_policy(lambda receiver, gene: gene.name == "g7")  # pluggable
        b.sync.set_accept_policy(lambda sender, gene: True)  # b's sovereignty refuses too
        await b.sync.sync_now(a.peer_id, repair=True)
        assert set(c.contents(b)) == {g.id for g in a.cortex.genes() if g.name == "g7"}
        c.stop_all(a, b)


async def test_receiver_acceptance_callback_refuses_genes(cluster):
    c = cluster
    async with trio.open_nursery() as nursery:
        a, b = await c.manual_pair(nursery)
        a.cortex.put_genes([make_gene(K1, f"g{i}") for i in range(6)])
        b.sync.set_accept_policy(lambda sender, gene: gene.name != "g0")
        stats = await b.sync.pull(a.peer_id)
        assert (stats.genes_in, stats.rejected) == (5, 1)
        c.stop_all(a, b)


async def test_anti_entropy_repairs_what_the_feed_missed(cluster):
    c = cluster
    async with trio.open_nursery() as nursery:
        a, b = await c.manual_pair(nursery)
        a.cortex.put_genes([make_gene(K1, f"g{i}") for i in range(50)])
        await b.sync.pull(a.peer_id)
        missed = [make_gene(K1, f"missed{i}") for i in range(3)]
        a.cortex.put_genes(missed)
        # The feed loses them: b's checkpoint jumps past (a bug, a lost batch...).
        b.cortex.set_checkpoint(a.peer_id, a.cortex.last_seq)
        assert (await b.sync.pull(a.peer_id)).genes_in == 0
        stats = await b.sync.reconcile(a.peer_id)
        assert stats.repaired == 3 and stats.errors == []
        assert c.contents(a) == c.contents(b)
        assert b.cortex.get_checkpoint(a.peer_id) == a.cortex.last_seq  # untouched
        in_sync = await b.sync.reconcile(a.peer_id)
        assert in_sync.repaired == 0 and in_sync.repair_round_trips == 1
        c.stop_all(a, b)


async def test_a_feed_that_went_back_resets_the_checkpoint_and_schedules_repair(cluster):
    c = cluster
    async with trio.open_nursery() as nursery:
        a, b = await c.manual_pair(nursery)
        a.cortex.put_genes([make_gene(K1, f"g{i}") for i in range(5)])
        b.cortex.set_checkpoint(a.peer_id, 1000)  # a was restored from an older backup
        await b.sync.pull(a.peer_id)
        assert b.cortex.get_checkpoint(a.peer_id) == 5
        assert b.sync.state(a.peer_id).repair_due
        c.stop_all(a, b)


async def test_sync_now_control_method_reports_both_directions(cluster):
    c = cluster
    async with trio.open_nursery() as nursery:
        a, b = await c.manual_pair(nursery)
        a.cortex.put_genes([make_gene(K1, f"a{i}") for i in range(20)])
        b.cortex.put_genes([make_gene(K2, f"b{i}") for i in range(7)])
        result = await trio.to_thread.run_sync(lambda: call(a.home, "sync_now"))
        [row] = result["peers"]
        assert (row["peer"], row["genes_in"], row["genes_out"]) == (b.peer_id, 7, 20)
        assert row["payload_in"] > 0 and row["wire_in"] > 0 and row["payload_out"] > 0
        assert result["totals"]["genes_out"] == 20
        assert c.contents(a) == c.contents(b)
        out = await trio.to_thread.run_sync(lambda: CliRunner().invoke(cli, [
            "sync", "now", "--peer", b.peer_id, "--home", str(a.home.root)]))
        assert out.exit_code == 0 and "sync with 1 peer(s)" in out.output, out.output
        c.stop_all(a, b)


def test_batch_payload_is_the_genes_bytes_exactly():
    gene = make_gene(K1).to_wire()
    for n in (0, 1, 15, 16, 40):
        batch = ChangeBatch(3, 3 + max(n, 1), n % 2 == 0, (gene,) * n)
        frame, payload = SyncBatch.pack(batch, 100, zstd=False)
        assert payload == n * len(canonical.encode_plain(gene))
        assert frame.open() == (batch, payload)


@pytest.mark.parametrize("section, message", [
    ({"share_all_for_tests": True}, r"\[sync\] share_all_for_tests: unknown key"),
    ({"interval_s": 0}, "interval_s"),
    ({"batch_genes": 1000}, "batch_genes"),
    ({"bogus": 1}, "bogus: unknown key"),
])
def test_sync_config_is_validated(section, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"node": {"org": "o", "region": "eu"}, "sync": section})


def test_sync_config_defaults_share_nothing():
    assert sync_settings(NodeConfig(org="o", region="eu")) == SyncSettings()
    assert "share_all_for_tests" not in {f.name for f in dataclasses.fields(SyncSettings)}


def test_the_binary_refuses_a_config_that_would_switch_sovereignty_off(tmp_path):
    """`[sync] share_all_for_tests = true` once made the real daemon share every gene with
    every peer; it is now an unknown key and `gd-node run` stops before listening."""
    home = tmp_path / "n1"
    made = CliRunner().invoke(cli, ["init", "--home", str(home), "--org", "o", "--region",
                                    "eu", "--seed", "01" * 32])
    assert made.exit_code == 0, made.output
    config = home / "config.toml"
    config.write_text(config.read_text() + "\n[sync]\nshare_all_for_tests = true\n")
    gd_node = Path(sys.executable).with_name("gd-node")
    # The old binary started and served: the timeout (the child is killed) bounds that.
    result = subprocess.run([str(gd_node), "run", "--home", str(home), "--log-format", "json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "[sync] share_all_for_tests: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


async def test_the_batches_after_a_group_are_read_and_checked_while_it_commits(cluster):
    """ADR 0058: a group's commit does not stall the pull. While it runs, the receiver
    reads the next replies and checks their genes; staging them waits for the commit."""
    c = cluster
    async with trio.open_nursery() as nursery:
        a, b = await small_batch_pair(c, nursery)
        a.cortex.put_genes([make_gene(K1, f"g{i}") for i in range(120)])
        committing, checked_meanwhile = threading.Event(), threading.Event()
        seen: list[bool] = []
        original, check = b.sync.store.apply_batches, b.sync.verify_pool

        def slow_first_commit(batches, **kw):
            if not seen:  # the first group (8 batches) waits for a check to start
                committing.set()
                seen.append(checked_meanwhile.wait(10))
                committing.clear()
            return original(batches, **kw)

        def watched_check(wires):
            if committing.is_set():
                checked_meanwhile.set()
            return check(wires)

        b.sync.store.apply_batches = slow_first_commit
        b.sync.verify_pool = watched_check
        stats = await b.sync.pull(a.peer_id)
        b.sync.store.apply_batches, b.sync.verify_pool = original, check
        assert seen == [True]
        assert stats.genes_in == 120 and c.contents(a) == c.contents(b)
        assert b.cortex.get_checkpoint(a.peer_id) == 120
        c.stop_all(a, b)


async def test_a_change_made_of_one_peers_genes_hints_the_others_but_not_that_peer(cluster):
    # ADR 0061: b applied genes that came from a; a holds them, so b's hint would only
    # have a pull them back and skip them (during a cold sync, once per group). d is
    # hinted; a reads them at its next pull, or at once when b changes anything else.
    c = cluster
    async with trio.open_nursery() as nursery:
        a = await c.start(nursery, 1, sync=c.SHARE_ALL, share_all=True)
        b = await c.start(nursery, 2, sync=c.SHARE_ALL, share_all=True, boot=[a])
        d = await c.start(nursery, 3, sync=c.SHARE_ALL, share_all=True, boot=[b])
        await c.connected(a, b, d)
        hinted: list[str] = []
        send_hint = b.sync._send_hint

        async def recorded(peer: str, head: int) -> None:
            hinted.append(peer)
            await send_hint(peer, head)

        b.sync._send_hint = recorded
        gene = make_gene(K2, "from-a")
        b.cortex.put_genes([gene])
        b.sync.notify_local_change(a.peer_id)  # as if b had applied it from a
        await c.until(lambda: d.cortex.get_gene(gene.id) is not None)
        await trio.sleep(20 * c.SHARE_ALL["debounce_s"])  # b's hints have all gone
        assert hinted == [d.peer_id]
        # (a may hold the gene by now: d, which got it from b, hints a.)
        own = make_gene(K2, "b's own")
        b.cortex.put_genes([own])
        b.sync.notify_local_change()  # anything else changed: every peer is hinted
        await c.until(lambda: a.peer_id in hinted)
        await c.until(lambda: a.cortex.get_gene(own.id) is not None)
        c.stop_all(a, b, d)


async def slow_puller(c, nursery, commits: list[int] | None = None):
    """a holding 100 genes in 10-gene batches for b, whose group commits each take 0.2 s
    in its worker thread (so batches queue up behind each one), each recorded by its
    number of batches in `commits`."""
    a = await c.start(nursery, 1, sync=c.SHARE_ALL, share_all=True)
    b = await c.start(nursery, 2, sync={**c.MANUAL, "batch_genes": 10}, share_all=True,
                      boot=[a])
    await c.connected(a, b)
    sent = [make_gene(K1, f"g{i}") for i in range(100)]
    a.cortex.put_genes(sent)
    original = b.sync.store.apply_batches

    def slow_commit(batches, *args, **kwargs):
        time.sleep(0.2)
        if commits is not None:
            commits.append(len(batches))
        return original(batches, *args, **kwargs)

    b.sync.store.apply_batches = slow_commit
    return a, b, sent


async def test_a_due_repair_round_waits_while_the_peer_catches_up_on_our_feed(cluster):
    # ADR 0061: a round now would build items for (and name) every gene b is about to
    # pull anyway; it runs once b has pulled and committed up to our feed's head.
    c = cluster
    async with trio.open_nursery() as nursery:
        a, b, _ = await slow_puller(c, nursery)
        st = a.sync.state(b.peer_id)
        seen: list[tuple[bool, int, int]] = []
        reconcile = a.sync.reconcile

        async def recorded(peer, stats=None):
            seen.append((st.catching_up(trio.current_time()), st.served.genes,
                         len(c.contents(b))))
            return await reconcile(peer, stats)

        a.sync.reconcile = recorded
        nursery.start_soon(b.sync.pull, a.peer_id)
        await c.until(lambda: st.served_behind_at is not None)  # b is behind our head
        assert a.sync.repair_after_pull(b.peer_id)
        await c.until(lambda: len(seen) == 1)
        catching_up, served, b_holds = seen[0]
        # b's pull reached our head, and b committed it all and closed the pull.
        assert not catching_up and served == 100 and b_holds == 100
        c.stop_all(a, b)


async def test_the_received_hook_runs_once_a_committed_group_with_all_its_genes(cluster):
    # Auto-adaptation writes its book on each call of the hook (an fsync): once a group
    # of up to 8 batches, not once a batch (issue 15).
    c = cluster
    async with trio.open_nursery() as nursery:
        commits: list[int] = []
        a, b, sent = await slow_puller(c, nursery, commits)
        calls: list[tuple[str, list[str]]] = []
        b.sync.on_received = lambda sender, genes: calls.append(
            (sender, [g.id for g in genes]))
        await b.sync.pull(a.peer_id)
        assert sum(commits) == 10 and len(commits) < 10  # 10 batches, grouped
        assert len(calls) == len(commits)
        assert {sender for sender, _ in calls} == {a.peer_id}
        assert [i for _, ids in calls for i in ids] == [g.id for g in sent]
        c.stop_all(a, b)
