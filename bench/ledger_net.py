"""The region's ledger over Raft on libp2p: committed entries/s, commit latency, failover.

Three voter daemons run in this process on 127.0.0.1 (real libp2p hosts: Noise, yamux,
the `/gd/raft/1.0.0` streams, LMDB with fsync on every Ready and every applied batch).
Clients submit pre-signed statements through the ledger services of all three nodes
(followers forward their batches to the leader); a statement's latency runs from submit
until it is committed *and applied* on the submitting node. The baseline, measured in the
same run with the same clients, is a region of one (no Raft, one durable append per
submission). Failover: the leader is stopped and the time until one of the others leads
a higher term is measured (repeated, restarting the stopped node in between).

    python bench/ledger_net.py [--statements 20000] [--clients 256] [--trials 3]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import percentile, report

from gd.genome import canonical
from gd.genome.identity import NodeKey
from gd.ledger.entry import LedgerEntry
from gd.node.config import NodeConfig
from gd.node.cortex import Cortex
from gd.node.daemon import Daemon, run_daemon
from gd.node.discovery import BootstrapPeer, render_bootstrap
from gd.node.home import Home
from gd.node.host import dialable_addrs
from gd.node.logging import configure_logging

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
FAST_MESH = {"backoff_base_s": 0.2, "backoff_max_s": 1.0, "ping_interval_s": 5}
SEED = 7


def key(n: int) -> NodeKey:
    return NodeKey.from_seed(n.to_bytes(32, "big"))


def signed(n: int, tag: str, count: int) -> list[LedgerEntry]:
    k = key(n)
    return [LedgerEntry.create(k, "decision", 1 + i, canonical.sha256(f"{tag}{i}".encode()),
                               {"i": i}) for i in range(count)]


class Nodes:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.cortexes: dict[int, Cortex] = {}

    async def start(self, nursery: trio.Nursery, n: int, voters: Sequence[str],
                    boot: Sequence[Daemon] = ()) -> Daemon:
        home = Home(self.root / f"n{n}")
        home.root.mkdir(exist_ok=True)
        if n not in self.cortexes:
            self.cortexes[n] = Cortex.open(home.cortex_path)
        cfg = NodeConfig(org=f"org{n}", region="eu", ledger_voters=tuple(voters),
                         extra={"mesh": dict(FAST_MESH), "sync": {"auto": False}})
        bootstrap = None
        if boot:
            bootstrap = home.root / "boot.toml"
            bootstrap.write_text(render_bootstrap([
                BootstrapPeer(d.peer_id, tuple(dialable_addrs(d.host)), "eu") for d in boot]))
        ready = trio.Event()
        box: list[Daemon] = []

        def on_ready(d: Daemon) -> None:
            box.append(d)
            ready.set()

        cortex = self.cortexes[n]
        nursery.start_soon(lambda: run_daemon(home, cfg, key(n), cortex=cortex,
                                              listen=LOOPBACK, bootstrap=bootstrap,
                                              ready_callback=on_ready,
                                              handle_signals=False))
        with trio.fail_after(20):
            await ready.wait()
        return box[0]

    def close(self) -> None:
        for cortex in self.cortexes.values():
            cortex.close()


async def until(predicate: Any, timeout: float = 60.0, step: float = 0.01) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(step)


async def meshed(ds: Sequence[Daemon]) -> None:
    await until(lambda: all({o.peer_id for o in ds if o is not d}
                            <= {r.peer_id for r in d.table.connected()} for d in ds))


async def leader(ds: Sequence[Daemon], min_term: int = 0) -> Daemon:
    box: list[Daemon] = []

    def found() -> bool:
        box[:] = [d for d in ds if d.ledger.node.is_leader and d.ledger.node.term > min_term]
        return len(box) == 1

    await until(found, step=0.005)
    return box[0]


async def _show_roles(ds: Sequence[Daemon]) -> None:
    while True:
        print([(d.ledger.node.role.value, d.ledger.node.term, d.ledger.node.election_elapsed,
                len(d.table.connected())) for d in ds])
        await trio.sleep(0.25)


async def load(ds: Sequence[Daemon], statements: list[list[LedgerEntry]], clients: int,
               per_submit: int) -> dict[str, Any]:
    """`clients` tasks submit `per_submit` statements at a time, round-robin over `ds`."""
    latencies: list[float] = []
    work = [(i, chunk) for i, node_statements in enumerate(statements)
            for chunk in (node_statements[j:j + per_submit]
                          for j in range(0, len(node_statements), per_submit))]
    work.reverse()

    async def client() -> None:
        while work:
            i, chunk = work.pop()
            start = time.perf_counter()
            await ds[i % len(ds)].ledger.submit(chunk, timeout_s=120)
            elapsed = time.perf_counter() - start
            latencies.extend([elapsed] * len(chunk))

    total = sum(len(s) for s in statements)
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(client)
    wall = time.perf_counter() - start
    return {"entries": total, "seconds": round(wall, 3),
            "entries_per_s": round(total / wall),
            "p50_ms": round(percentile(latencies, 50) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1)}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="gdb", dir="/tmp"))
    nodes = Nodes(root)
    rows: list[dict[str, Any]] = []
    failovers: list[float] = []
    per_node = args.statements // 3
    try:
        async with trio.open_nursery() as nursery:
            # Baseline: a region of one, same clients and submissions.
            solo = await nodes.start(nursery, 9, ())
            base = await load([solo], [signed(9, "solo", per_node * 3)], args.clients,
                              args.per_submit)
            rows.append({"setup": "region of one (baseline)", **base, "vs_baseline": 1.0})
            solo.stop()

            voters = [key(n).peer_id for n in (1, 2, 3)]
            ds: list[Daemon] = []
            for n in (1, 2, 3):
                ds.append(await nodes.start(nursery, n, voters, ds))
            await meshed(ds)
            await leader(ds)
            warm = await load(ds, [signed(n, "warm", 300) for n in (1, 2, 3)], 16, 10)
            del warm
            raft = await load(ds, [signed(n, "run", per_node) for n in (1, 2, 3)],
                              args.clients, args.per_submit)
            rows.append({"setup": "3 voters, Raft over libp2p", **raft,
                         "vs_baseline": round(raft["entries_per_s"] / base["entries_per_s"],
                                              2)})
            sizes = {d.ledger.ledger.size for d in ds}
            for trial in range(args.trials):
                current = await leader(ds)
                term = current.ledger.node.term
                n = ds.index(current) + 1
                current.stop()
                stopped = time.perf_counter()
                others = [d for d in ds if d is not current]
                if args.verbose:
                    async with trio.open_nursery() as watch:
                        watch.start_soon(_show_roles, others)
                        await leader(others, term)
                        watch.cancel_scope.cancel()
                await leader(others, term)
                failovers.append(time.perf_counter() - stopped)
                await trio.sleep(0.5)
                ds[n - 1] = await nodes.start(nursery, n, voters, others)
                await meshed(ds)
                await until(lambda: len({d.ledger.ledger.size for d in ds}) == 1)
                del trial
            for d in ds:
                d.stop()
    finally:
        nodes.close()
        shutil.rmtree(root, ignore_errors=True)
    failovers.sort()
    return {"rows": rows, "failover_s": [round(f, 3) for f in failovers],
            "failover_median_s": round(failovers[len(failovers) // 2], 3) if failovers else None,
            "replica_sizes_after_load": sorted(sizes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--per-submit", type=int, default=10,
                        help="statements per submission (a CLI batch, e.g. decisions)")
    parser.add_argument("--trials", type=int, default=3, help="leader failovers to time")
    parser.add_argument("--verbose", action="store_true", help="print roles during failover")
    args = parser.parse_args()
    configure_logging("console", "error")
    for name in ("libp2p", "multiaddr", "async_service"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    result = trio.run(bench, args)
    rows = result.pop("rows")
    for row in rows:
        row["failover_median_s"] = result["failover_median_s"] if "Raft" in row["setup"] \
            else ""
    report("ledger_net", rows, {"params": vars(args), **result})
    print(f"leader failover (stop -> new leader): {result['failover_s']} s")


if __name__ == "__main__":
    main()
