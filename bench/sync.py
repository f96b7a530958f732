"""Sync between two daemons over real libp2p on loopback (issue 6's benchmark).

One process, two (three) in-process daemons, each with its own LMDB Cortex, talking
Noise + yamux over 127.0.0.1. Daemons run with `[sync] auto = false` so only the
measured rounds move anything, and an allow-all share policy passed in-process.

Rows:
* `local apply (baseline)`: the same genes read from A's feed, verified (across cores,
  in processes as the daemon does, `gd.node.services.verify_procs`) and applied in
  batches of 256 into a fresh Cortex with no network: the floor a network sync can
  approach. `vs_local` is each network row's time over this.
* `cold sync zstd` / `cold sync plain`: a fresh node pulls all N genes, with and without
  zstd. Payload = canonical gene bytes; wire = frame bytes on the sync stream;
  overhead % = (wire - payload) / payload (negative when compression wins).
* `warm sync 1 %`: 1 % of A's genes get a new version; B pulls them.
* `anti-entropy 0 / 10 diffs`: reconciliation (then fetching what is missing) when the
  sets are equal, and when A holds 10 recent versions B's feed skipped.

    .venv/bin/python bench/sync.py [--genes 100000] [--seed 1]
"""

from __future__ import annotations

import argparse
import gc
import logging
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report

from gd.genome import Codon, Gene, NodeKey
from gd.node.config import MeshSettings, NodeConfig, SyncSettings
from gd.node.daemon import Daemon, run_daemon
from gd.node.home import Home
from gd.node.logging import configure_logging
from gd.node.net.bootstrap_file import BootstrapPeer, render_bootstrap
from gd.node.net.host import dialable_addrs
from gd.node.services.sync_service import share_all
from gd.node.services.verify_procs import ProcessVerifyPool
from gd.node.store.cortex import Cortex
from gd.node.store.sync_store import SyncStore
from gd.protocol.sync import SyncReceiver, SyncSender

T0_MS = 1_700_000_000_000
FEATURES = [f"s{i}" for i in range(1, 22)]


def make_genes(key: NodeKey, n: int, rng: random.Random) -> list[Gene]:
    """~1.5 KB genes (issue 6's sizing): 12 weighted codons, a purpose, a few params."""
    out = []
    for i in range(n):
        codons = [Codon.simple(rng.choice(FEATURES), rng.choice([">", "<", ">=", "<="]),
                               round(rng.uniform(0, 100), 3)) for _ in range(12)]
        out.append(Gene.create(
            key, domain="turbofan", name=f"rule-{i:06d}", codons=codons, action="inspect",
            purpose="avoid unplanned failure of the high-pressure turbine " * 3,
            params={"horizon_cycles": rng.randrange(10, 200), "margin": rng.random()},
            hlc=(T0_MS + i) << 16))
    return out


async def start(nursery: trio.Nursery, root: Path, n: int, sync: dict[str, Any],
                boot: Daemon | None = None) -> Daemon:
    home = Home(root / f"n{n}")
    home.root.mkdir()
    cortex = Cortex.open(home.cortex_path, map_size=4 << 30)
    cfg = NodeConfig(org=f"org{n}", region="eu", sync=SyncSettings(**sync),
                     mesh=MeshSettings(ping_interval_s=60))
    bootstrap = None
    if boot is not None:
        bootstrap = home.root / "boot.toml"
        bootstrap.write_text(render_bootstrap([BootstrapPeer(
            boot.peer_id, tuple(dialable_addrs(boot.host)), "eu")]))
    box: list[Daemon] = []
    ready = trio.Event()

    def on_ready(d: Daemon) -> None:
        box.append(d)
        ready.set()

    nursery.start_soon(lambda: run_daemon(home, cfg, NodeKey.from_seed(n.to_bytes(32, "big")),
                                          cortex=cortex, listen=["/ip4/127.0.0.1/tcp/0"],
                                          bootstrap=bootstrap, ready_callback=on_ready,
                                          handle_signals=False, share_policy=share_all))
    await ready.wait()
    return box[0]


async def meshed(a: Daemon, b: Daemon) -> None:
    with trio.fail_after(30):
        while b.peer_id not in {r.peer_id for r in a.table.connected()} or \
                a.peer_id not in {r.peer_id for r in b.table.connected()}:
            await trio.sleep(0.05)


def local_apply(src: Cortex, dst_path: Path, sender: str) -> float:
    """Baseline: feed -> verify -> apply into a fresh Cortex, no network."""
    with Cortex.open(dst_path, map_size=4 << 30) as dst:
        store, theirs = SyncStore(dst), SyncStore(src)
        sending = SyncSender("me", theirs.read_feed, lambda r, g: True)
        pool = ProcessVerifyPool()
        receiving = SyncReceiver(sender, store.apply_batch, check=pool)
        start = time.perf_counter()
        try:
            while True:
                outcome = receiving.receive(sending.receive(receiving.request()))
                if not outcome.more:
                    break
        finally:
            pool.close()
        return time.perf_counter() - start


def row(name: str, seconds: float, genes: int, payload: int, wire: int,
        baseline: float | None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "case": name, "seconds": round(seconds, 3), "genes": genes,
        "genes_per_s": round(genes / seconds) if seconds and genes else 0,
        "payload_bytes": payload, "wire_bytes": wire,
        "overhead_pct": round(100 * (wire - payload) / payload, 2) if payload else None,
    }
    if baseline:
        out["vs_local"] = round(seconds / baseline, 2)
    out.update(extra)
    return out


async def bench(n: int, seed: int, root: Path) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    manual = {"auto": False}
    rows: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:
        a = await start(nursery, root, 1, manual)
        t = time.perf_counter()
        genes = make_genes(a.key, n, rng)
        for i in range(0, n, 5000):
            a.cortex.put_genes(genes[i:i + 5000])
        print(f"made and stored {n} genes on A in {time.perf_counter() - t:.1f} s "
              f"({sum(len(g.wire_bytes) for g in genes[:100]) / 100:.0f} B/gene)",
              file=sys.stderr)
        # The receiving daemons hold none of these 100k Gene objects in a deployment:
        # keep the collector from walking them on every batch (the daemons freeze their
        # own start-up heap, gd.node.gc_tuning).
        gc.freeze()
        base = await trio.to_thread.run_sync(local_apply, a.cortex, root / "local",
                                             a.peer_id)
        rows.append(row("local apply (baseline)", base, n, 0, 0, None))

        for n_node, compress in ((2, True), (3, False)):
            b = await start(nursery, root, n_node, {**manual, "compress": compress}, boot=a)
            await meshed(a, b)
            t = time.perf_counter()
            stats = await b.sync.pull(a.peer_id)
            dt = time.perf_counter() - t
            assert stats.genes_in == n, stats
            rows.append(row(f"cold sync {'zstd' if compress else 'plain'}", dt, n,
                            stats.payload_in, stats.wire_in, base, batches=stats.batches))
            if compress:
                warm_b = b
            else:
                b.stop()

        b = warm_b
        changed = rng.sample(genes, max(1, n // 100))
        edits = [g.edited(a.key, hlc=(T0_MS + n + i) << 16, purpose="tuned after review")
                 for i, g in enumerate(changed)]
        a.cortex.put_genes(edits)
        t = time.perf_counter()
        stats = await b.sync.pull(a.peer_id)
        dt = time.perf_counter() - t
        assert stats.genes_in == len(edits), stats
        rows.append(row("warm sync 1 %", dt, len(edits), stats.payload_in, stats.wire_in,
                        base * len(edits) / n))

        t = time.perf_counter()
        stats = await b.sync.reconcile(a.peer_id)
        dt = time.perf_counter() - t
        rows.append(row("anti-entropy 0 diffs", dt, 0, 0, stats.repair_wire, None,
                        round_trips=stats.repair_round_trips))
        extra = make_genes(a.key, n + 10, random.Random(seed + 1))[n:]
        a.cortex.put_genes(extra)
        b.cortex.set_checkpoint(a.peer_id, a.cortex.last_seq)  # the feed "missed" them
        t = time.perf_counter()
        stats = await b.sync.reconcile(a.peer_id)
        dt = time.perf_counter() - t
        assert stats.repaired == 10, stats
        rows.append(row("anti-entropy 10 diffs", dt, 10, stats.payload_in, stats.repair_wire,
                        None, round_trips=stats.repair_round_trips))
        a.stop()
        b.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--genes", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    configure_logging("console", "warning")
    for name in ("libp2p", "multiaddr", "async_service"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    root = Path(tempfile.mkdtemp(prefix="gdb", dir="/tmp"))
    try:
        rows = trio.run(bench, args.genes, args.seed, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report("sync", rows, {"genes": args.genes, "seed": args.seed,
                          "notes": "overhead_pct = (wire - payload) / payload; payload = "
                                   "canonical gene bytes before compression"})


if __name__ == "__main__":
    main()
