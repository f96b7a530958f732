"""The region's ledger over Raft on libp2p: committed entries/s, commit latency, failover.

Two layouts, both measured in the same run:

* **processes** (as deployed): each voter is its own `gd-node run` process on 127.0.0.1,
  made with `gd-node init`; client threads in this process submit pre-signed statements
  through each node's control socket (`ledger_submit`), round-robin over the nodes, each
  client keeping one connection per node (`--client-mode keepalive`, as etcd's clients
  keep theirs; `call`: a connection per submission, as the CLI does). Its baseline is a
  region of one, also a `gd-node run` process, driven the same way. The three voters are
  driven twice: `--per-submit` statements a submission, then one (the row that
  bench/ledger_vs_etcd.py sets beside etcd's single puts).
* **in-process**: three voter daemons run in this process on 127.0.0.1 (real libp2p
  hosts: Noise, yamux, the `/gd/raft/1.0.0` streams, LMDB with fsync on). Clients submit
  pre-signed statements through the ledger services of all three nodes (followers
  forward their batches to the leader). The baseline, measured in the same run with the
  same clients, is a region of one (no Raft; concurrent submissions share a commit).

A statement's latency runs from submit until it is committed *and applied* on the
submitting node. CPU per committed entry (the main figure on a shared machine): of the
nodes' processes in the process layout (`node_cpu_us_per_entry`), of this whole process,
nodes and clients together, in-process (`process_cpu_us_per_entry`). Failover: the
leader is stopped and the time until one of the others leads a higher term is measured
(repeated, restarting the stopped node in between).

    python bench/ledger_net.py [--statements 20000] [--clients 256] [--trials 3]
                               [--skip-processes | --only-processes]
                               [--client-mode keepalive|call]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import percentile, report

from gd.genome import canonical
from gd.genome.identity import NodeKey
from gd.ledger.entry import LedgerEntry
from gd.node.config import MeshSettings, NodeConfig, SyncSettings
from gd.node.control import ControlError, call
from gd.node.daemon import Daemon, run_daemon
from gd.node.home import Home
from gd.node.logging import configure_logging
from gd.node.net.bootstrap_file import BootstrapPeer, render_bootstrap
from gd.node.net.host import dialable_addrs
from gd.node.store.cortex import Cortex
from gd.testnet.procs import terminate_all

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
                         mesh=MeshSettings(**FAST_MESH), sync=SyncSettings(auto=False))
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
    cpu = time.process_time()
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(client)
    wall = time.perf_counter() - start
    # All threads of this process: the nodes and the clients together (in-process).
    cpu = time.process_time() - cpu
    return {"entries": total, "seconds": round(wall, 3),
            "entries_per_s": round(total / wall),
            "p50_ms": round(percentile(latencies, 50) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1),
            "process_cpu_us_per_entry": round(cpu / total * 1e6)}


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
            rows.append({"setup": "region of one, in-process (baseline)", **base,
                         "vs_baseline": 1.0})
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
            rows.append({"setup": "3 voters, in-process, Raft over libp2p", **raft,
                         "vs_baseline": round(raft["entries_per_s"] / base["entries_per_s"],
                                              2)})
            sizes = {d.ledger.ledger.size for d in ds}
            moved = 0  # Raft links that followed a peer to a newer connection (ADR 0056)
            for trial in range(args.trials):
                current = await leader(ds)
                term = current.ledger.node.term
                n = ds.index(current) + 1
                moved += current.ledger.links.moved
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
                moved += d.ledger.links.moved
                d.stop()
    finally:
        nodes.close()
        shutil.rmtree(root, ignore_errors=True)
    failovers.sort()
    return {"rows": rows, "failover_s": [round(f, 3) for f in failovers],
            "failover_median_s": round(failovers[len(failovers) // 2], 3) if failovers else None,
            "replica_sizes_after_load": sorted(sizes), "raft_links_moved": moved}


# ---- voters as their own processes ----------------------------------------------------

GD_NODE = Path(sys.executable).with_name("gd-node")
PROCESS_START_S = 90.0
SUBMIT_ATTEMPTS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_homes(root: Path, seeds: Sequence[int], voters: bool) -> list[Home]:
    """`gd-node init` one home per seed; with `voters`, all of them are the voters."""
    ports = [_free_port() for _ in seeds]
    ids = [key(n).peer_id for n in seeds]
    homes = []
    for i, n in enumerate(seeds):
        home = Home(root / f"p{n}")
        subprocess.run([str(GD_NODE), "init", "--home", str(home.root), "--org", f"org{n}",
                        "--region", "eu", "--seed", n.to_bytes(32, "big").hex(),
                        "--listen", f"/ip4/127.0.0.1/tcp/{ports[i]}"],
                       check=True, capture_output=True, timeout=120)
        if voters:
            text = home.config_path.read_text()
            listed = ", ".join(f'"{v}"' for v in ids)
            home.config_path.write_text(text.replace("voters = []", f"voters = [{listed}]"))
        (home.root / "boot.toml").write_text("".join(
            f'[[peers]]\npeer_id = "{ids[m]}"\naddrs = ["/ip4/127.0.0.1/tcp/{ports[m]}"]\n'
            for m in range(len(seeds)) if m != i))
        homes.append(home)
    return homes


def start_process(home: Home) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(GD_NODE), "run", "--home", str(home.root), "--bootstrap",
         str(home.root / "boot.toml"), "--log-format", "json", "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _status(home: Home) -> dict[str, Any] | None:
    try:
        result = call(home, "ledger_status", timeout=2.0)
    except ControlError:
        return None
    return result if isinstance(result, dict) else None


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise RuntimeError(f"{what} not reached within {timeout} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def submitter(homes: Sequence[Home], mode: str) -> tuple[Any, Any]:
    """(submit(i, chunk), close()) for one client thread: `call` connects per
    submission; `keepalive` keeps one connection per node (ADR 0049)."""
    if mode == "call":
        def once(i: int, chunk: list[bytes]) -> None:
            call(homes[i % len(homes)], "ledger_submit", timeout=150.0, statements=chunk,
                 timeout_s=120.0)
        return once, lambda: None
    from gd.node.control_client import ControlConnection  # absent before ADR 0049

    conns = [ControlConnection(h, timeout=150.0) for h in homes]

    def kept(i: int, chunk: list[bytes]) -> None:
        conns[i % len(conns)].call("ledger_submit", statements=chunk, timeout_s=120.0)

    def close() -> None:
        for conn in conns:
            conn.close()
    return kept, close


def process_load(homes: Sequence[Home], statements: list[list[LedgerEntry]], clients: int,
                 per_submit: int, pids: Sequence[int] = (), mode: str = "keepalive"
                 ) -> dict[str, Any]:
    """Client threads submit `per_submit` statements at a time over the control sockets
    (`mode`: see `submitter`). With the nodes' `pids`, also their CPU time per committed
    entry (all nodes together): on a shared machine it moves far less with other work
    than entries/s does."""
    work: deque[tuple[int, list[bytes]]] = deque(
        (i, [s.encoded for s in node_statements[j:j + per_submit]])
        for i, node_statements in enumerate(statements)
        for j in range(0, len(node_statements), per_submit))
    latencies: list[float] = []
    failures: list[str] = []

    def client() -> None:
        submit, close = submitter(homes, mode)
        try:
            while True:
                try:
                    i, chunk = work.popleft()
                except IndexError:
                    return
                start = time.perf_counter()
                for attempt in range(SUBMIT_ATTEMPTS):
                    try:
                        submit(i, chunk)
                        break
                    except ControlError as exc:  # retried with the same statements
                        if attempt == SUBMIT_ATTEMPTS - 1:
                            failures.append(str(exc)[:200])
                            return
                latencies.extend([time.perf_counter() - start] * len(chunk))
        finally:
            close()

    total = sum(len(s) for s in statements)
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    cpu_before = sum(cpu_seconds(pid) for pid in pids)
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    wall = time.perf_counter() - start
    if failures or len(latencies) != total:
        raise RuntimeError(f"{len(failures)} submissions failed: {failures[:3]}")
    cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
    return {"entries": total, "seconds": round(wall, 3),
            "entries_per_s": round(total / wall),
            "p50_ms": round(percentile(latencies, 50) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1),
            **({"node_cpu_us_per_entry": round(cpu / total * 1e6)} if pids else {}),
            "client_mode": mode}


# The 3-voter process row whose clients submit one statement at a time (compared with
# etcd's single puts; the other 3-voter rows submit `--per-submit` at a time).
SINGLE_SETUP = "3 voters, one statement a submission"


def _stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    terminate_all(procs, timeout_s=30)


def bench_processes(args: argparse.Namespace) -> list[dict[str, Any]]:
    """A region of one, then three voters, each node a `gd-node run` process."""
    root = Path(tempfile.mkdtemp(prefix="gdp", dir="/tmp"))
    per_node = args.statements // 3
    rows: list[dict[str, Any]] = []
    try:
        solo_home = init_homes(root, [19], voters=False)
        procs = [start_process(solo_home[0])]
        try:
            _wait(lambda: _status(solo_home[0]), PROCESS_START_S, "solo daemon up")
            base = process_load(solo_home, [signed(19, "psolo", per_node * 3)], args.clients,
                                args.per_submit, [p.pid for p in procs], args.client_mode)
        finally:
            _stop(procs)
        rows.append({"setup": "region of one, gd-node run process (baseline)", **base,
                     "vs_baseline": 1.0})
        homes = init_homes(root, [11, 12, 13], voters=True)
        procs = [start_process(h) for h in homes]
        try:
            # Every node answering (a slow starter's socket may not exist yet when two
            # others have elected a leader), and a leader among them.
            _wait(lambda: all(_status(h) for h in homes), PROCESS_START_S, "all nodes up")
            _wait(lambda: any((st := _status(h)) and st.get("role") == "leader"
                              for h in homes), PROCESS_START_S, "a leader")
            process_load(homes, [signed(n, "pwarm", 300) for n in (11, 12, 13)], 16, 10,
                         mode=args.client_mode)
            raft = process_load(homes, [signed(n, "prun", per_node) for n in (11, 12, 13)],
                                args.clients, args.per_submit, [p.pid for p in procs],
                                args.client_mode)
            _wait(lambda: len({(_status(h) or {}).get("size") for h in homes}) == 1,
                  60.0, "replicas at one size")
            # Like for like with etcd's single puts (bench/ledger_vs_etcd.py): the same
            # clients, each submitting one statement at a time.
            single = process_load(homes, [signed(n, "prun1", per_node) for n in (11, 12, 13)],
                                  args.clients, 1, [p.pid for p in procs], args.client_mode) \
                if args.per_submit > 1 else None
        finally:
            _stop(procs)
        rows.append({"setup": "3 voters, each a gd-node run process", **raft,
                     "vs_baseline": round(raft["entries_per_s"] / base["entries_per_s"], 2)})
        if single is not None:
            rows.append({"setup": f"{SINGLE_SETUP}, each a gd-node run process", **single,
                         "vs_baseline": round(single["entries_per_s"]
                                              / base["entries_per_s"], 2)})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--per-submit", type=int, default=10,
                        help="statements per submission (a CLI batch, e.g. decisions)")
    parser.add_argument("--trials", type=int, default=3, help="leader failovers to time")
    parser.add_argument("--verbose", action="store_true", help="print roles during failover")
    parser.add_argument("--skip-processes", action="store_true",
                        help="only the in-process layout")
    parser.add_argument("--only-processes", action="store_true",
                        help="only the process layout (no in-process rows, no failover)")
    parser.add_argument("--client-mode", choices=("keepalive", "call"), default="keepalive",
                        help="process layout: a kept connection per client and node, or a "
                             "connection per submission (the CLI's way)")
    args = parser.parse_args()
    configure_logging("console", "error")
    for name in ("libp2p", "multiaddr", "async_service"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    process_rows = [] if args.skip_processes else bench_processes(args)
    result = {"rows": [], "failover_s": [], "failover_median_s": None} \
        if args.only_processes else trio.run(bench, args)
    rows = process_rows + result.pop("rows")
    for row in rows:
        row["failover_median_s"] = result["failover_median_s"] if "Raft" in row["setup"] \
            else ""
    report("ledger_net", rows, {"params": vars(args), **result})
    print(f"leader failover (stop -> new leader): {result['failover_s']} s; Raft links "
          f"moved to a newer connection: {result.get('raft_links_moved', 0)}")


if __name__ == "__main__":
    main()
