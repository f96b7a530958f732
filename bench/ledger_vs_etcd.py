"""etcd side by side with our ledger (issue 15): the reference for a Raft log on one machine.

Starts a 3-member etcd cluster on 127.0.0.1 (Debian's `etcd-server`, fsync on: etcd's
default, nothing here turns it off), drives it with the same number of concurrent clients
and the same payload size as `bench/ledger_net.py`'s ledger entries (one signed
`LedgerEntry`, ~300 bytes), each client a keep-alive HTTP/1.1 connection to etcd's
JSON gateway (`POST /v3/kv/put`), spread over the three members as our clients are over
the three voters. A put's latency runs from send to etcd's answer (committed by a
quorum and applied). Our figures come from `bench/results/ledger_net.json` of the same
`make bench` run (ledger_net runs just before this script) and are printed as ratios to
etcd's. Every etcd process is stopped and reaped, and its data directory removed.

    python bench/ledger_vs_etcd.py [--puts 20000] [--clients 64] [--per-txn 10]

A second etcd run puts as many keys a request as our clients submit statements (a
`kv/txn` of 10 puts: one Raft entry), so its latency counts the same entries in flight
as ours. The like-for-like pairs are reported: our 10-statement submissions against
etcd's 10-put txns, and our one-statement submissions (ledger_net.json's second 3-voter
row) against etcd's single puts.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, percentile, report

from gd.genome import canonical
from gd.genome.identity import NodeKey
from gd.ledger.entry import LedgerEntry

HOST = "127.0.0.1"
INSTALL = "apt-get update && apt-get install -y etcd-server"
START_TIMEOUT_S = 30.0


def entry_size() -> int:
    """Bytes of one encoded ledger entry as ledger_net.py submits them."""
    key = NodeKey.from_seed((1).to_bytes(32, "big"))
    entry = LedgerEntry.create(key, "decision", 1, canonical.sha256(b"run0"), {"i": 0})
    return len(entry.encode())


def free_ports(n: int) -> list[int]:
    import socket

    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class Cluster:
    """Three etcd members on loopback, stopped and reaped by `close`."""

    def __init__(self, binary: str, root: Path) -> None:
        ports = free_ports(6)
        self.client_ports = ports[:3]
        peers = ports[3:]
        initial = ",".join(f"m{i}=http://{HOST}:{peers[i]}" for i in range(3))
        self.procs: list[subprocess.Popen[bytes]] = []
        for i in range(3):
            log = (root / f"m{i}.log").open("wb")
            self.procs.append(subprocess.Popen([
                binary, "--name", f"m{i}", "--data-dir", str(root / f"m{i}"),
                "--listen-client-urls", f"http://{HOST}:{self.client_ports[i]}",
                "--advertise-client-urls", f"http://{HOST}:{self.client_ports[i]}",
                "--listen-peer-urls", f"http://{HOST}:{peers[i]}",
                "--initial-advertise-peer-urls", f"http://{HOST}:{peers[i]}",
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", "gd-bench", "--log-level", "error",
            ], stdout=log, stderr=subprocess.STDOUT))
            log.close()

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


async def http_post(stream: trio.SocketStream, port: int, path: str, body: bytes,
                    buf: bytearray) -> tuple[int, bytes]:
    """One keep-alive POST; returns (status, body). `buf` carries bytes between calls."""
    await stream.send_all(
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json"
        f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    while b"\r\n\r\n" not in buf:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("etcd closed the connection")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("etcd closed the connection")
        rest += chunk
    buf[:] = rest[length:]
    return status, rest[:length]


async def wait_ready(cluster: Cluster) -> None:
    with trio.fail_after(START_TIMEOUT_S):
        for port in cluster.client_ports:
            while True:
                try:
                    stream = await trio.open_tcp_stream(HOST, port)
                    status, _ = await http_post(stream, port, "/v3/kv/put", json.dumps(
                        {"key": base64.b64encode(b"ready").decode(),
                         "value": ""}).encode(), bytearray())
                    await stream.aclose()
                    if status == 200:
                        break
                except OSError:
                    pass
                await trio.sleep(0.2)


async def drive(cluster: Cluster, puts: int, clients: int, size: int,
                per_request: int = 1) -> dict[str, Any]:
    """`clients` keep-alive clients put `puts` keys of `size` bytes: one `kv/put` a
    request, or `per_request` puts in one unconditional `kv/txn` (one Raft entry, as
    our submission of that many statements is one proposal). Each put's latency is its
    request's."""
    latencies: list[float] = []
    value = base64.b64encode(bytes(size)).decode()
    remaining = [puts]

    def key(i: int, n: int) -> str:
        return base64.b64encode(f"k{i}-{n}".encode()).decode()

    async def client(i: int) -> None:
        port = cluster.client_ports[i % 3]
        stream = await trio.open_tcp_stream(HOST, port)
        buf = bytearray()
        try:
            while remaining[0] > 0:
                n = min(per_request, remaining[0])
                remaining[0] -= n
                keys = [key(i, remaining[0] + j) for j in range(n)]
                body: dict[str, Any]
                if per_request == 1:
                    path, body = "/v3/kv/put", {"key": keys[0], "value": value}
                else:
                    path, body = "/v3/kv/txn", {"success": [
                        {"request_put": {"key": k, "value": value}} for k in keys]}
                start = time.perf_counter()
                status, reply = await http_post(stream, port, path,
                                                json.dumps(body).encode(), buf)
                if status != 200:
                    raise RuntimeError(f"etcd answered {status}: {reply[:200]!r}")
                latencies.extend([time.perf_counter() - start] * n)
        finally:
            await stream.aclose()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(clients):
            nursery.start_soon(client, i)
    wall = time.perf_counter() - start
    return {"puts": len(latencies), "seconds": round(wall, 3),
            "puts_per_s": round(len(latencies) / wall),
            "p50_ms": round(percentile(latencies, 50) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1)}


def _our_per_submit() -> int:
    """Statements per submission in ledger_net.json's run (its default, 10, if absent)."""
    path = RESULTS / "ledger_net.json"
    if path.exists():
        return int(json.loads(path.read_text()).get("params", {}).get("per_submit", 10))
    return 10


def ours(single: bool = False) -> dict[str, Any] | None:
    """A 3-voter process row of ledger_net.json (written earlier in the same `make
    bench`): the one submitting `--per-submit` statements at a time, or with `single`
    the one submitting one at a time."""
    path = RESULTS / "ledger_net.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    row = next((r for r in data.get("rows", []) if "3 voters" in str(r.get("setup"))
                and "gd-node run" in str(r.get("setup"))
                and ("one statement a submission" in str(r.get("setup"))) == single), None)
    if row is not None:
        row["clients"] = data.get("params", {}).get("clients")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--puts", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=64,
                        help="concurrent clients (ledger_net.py's default)")
    parser.add_argument("--per-txn", type=int, default=None,
                        help="puts a txn in the second etcd run (default: ledger_net.json's "
                             "statements per submission; 1 skips that run)")
    args = parser.parse_args()
    binary = shutil.which("etcd")
    if binary is None:
        print(f"etcd is not installed; as root: {INSTALL}", file=sys.stderr)
        report("ledger_vs_etcd", [{"setup": "etcd 3 members", "note":
                                   f"etcd not installed ({INSTALL})"}])
        return 0
    size = entry_size()
    root = Path(tempfile.mkdtemp(prefix="gdetcd", dir="/tmp"))
    cluster = Cluster(binary, root)
    per_txn = args.per_txn if args.per_txn is not None else _our_per_submit()
    try:
        trio.run(wait_ready, cluster)
        etcd = trio.run(drive, cluster, args.puts, args.clients, size)
        batched = (trio.run(drive, cluster, args.puts, args.clients, size, per_txn)
                   if per_txn > 1 else None)
    finally:
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)
    version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=10).stdout.split("\n")[0]
    rows: list[dict[str, Any]] = [{"setup": f"etcd 3 members, fsync ({version})",
                                   "clients": args.clients, "payload_bytes": size, **etcd}]
    if batched is not None:
        rows.append({"setup": f"etcd 3 members, fsync, {per_txn} puts a txn (as many a "
                              "request as our submissions)", "clients": args.clients,
                     "payload_bytes": size, **batched})
    mine = ours()
    if mine is not None:
        rows.append({
            "setup": "gd ledger, 3 voters (ledger_net.json)", "clients": mine["clients"],
            "payload_bytes": size, "puts": mine["entries"], "seconds": mine["seconds"],
            "puts_per_s": mine["entries_per_s"], "p50_ms": mine["p50_ms"],
            "p99_ms": mine["p99_ms"],
            "throughput_vs_etcd": round(mine["entries_per_s"] / etcd["puts_per_s"], 3),
            "p50_vs_etcd": round(mine["p50_ms"] / etcd["p50_ms"], 2),
            "p99_vs_etcd": round(mine["p99_ms"] / etcd["p99_ms"], 2)})
        if batched is not None:
            rows[-1].update({
                "throughput_vs_etcd_txn": round(mine["entries_per_s"] / batched["puts_per_s"],
                                                3),
                "p99_vs_etcd_txn": round(mine["p99_ms"] / batched["p99_ms"], 2)})
    one = ours(single=True)
    if one is not None:  # like for like: one statement a request, as etcd's single puts
        rows.append({
            "setup": "gd ledger, 3 voters, one statement a submission (ledger_net.json)",
            "clients": one["clients"], "payload_bytes": size, "puts": one["entries"],
            "seconds": one["seconds"], "puts_per_s": one["entries_per_s"],
            "p50_ms": one["p50_ms"], "p99_ms": one["p99_ms"],
            "throughput_vs_etcd": round(one["entries_per_s"] / etcd["puts_per_s"], 3),
            "p50_vs_etcd": round(one["p50_ms"] / etcd["p50_ms"], 2),
            "p99_vs_etcd": round(one["p99_ms"] / etcd["p99_ms"], 2)})
    report("ledger_vs_etcd", rows, {"params": vars(args)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
