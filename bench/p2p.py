"""P2P benchmark: connection setup, handshake, stream throughput, small-message RTT,
daemon cold start. Two in-process hosts on 127.0.0.1 (Noise + yamux), and a real
`gd-node run` process timed from spawn to its first 200 on /healthz (baseline in the
same run: a bare interpreter start, and the daemon's imports alone).

Both process figures are taken with our modules' bytecode compiled first, as `pip
install` writes it and `make venv` does: this machine sets PYTHONDONTWRITEBYTECODE, and
without bytecode every start compiles ~250 modules (0.4-0.6 s measured; ADR 0063).

    .venv/bin/python bench/p2p.py [--rounds N] [--mb M]

Prints a table and writes bench/results/p2p.json. The baseline for the RTT is a bare
trio TCP socket pair measured in the same run (what libp2p + Noise + yamux cost on top).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import trio

from gd.genome.identity import NodeKey
from gd.node.config import NodeConfig
from gd.node.daemon import Daemon, run_daemon
from gd.node.home import Home
from gd.node.net.host import dialable_addrs, peer_info, running_host
from gd.node.net.streams import FramedStream, Ping, Pong, drive_handshake
from gd.protocol.handshake import PROTOCOL_ID, Handshake, HandshakeOffer

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
BULK_PROTOCOL = "/gd/bench/bulk/1"
ECHO_PROTOCOL = "/gd/bench/echo/1"
CHUNK = 64 * 1024


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def tcp_rtt_baseline(n: int) -> list[float]:
    async def echo(stream: trio.SocketStream) -> None:
        while data := await stream.receive_some(64):
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            lambda task_status: trio.serve_tcp(echo, 0, host="127.0.0.1",
                                               task_status=task_status))
        port = listeners[0].socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        out = []
        for _ in range(n):
            t = time.perf_counter()
            await client.send_all(b"x" * 21)
            await client.receive_some(64)
            out.append((time.perf_counter() - t) * 1000)
        await client.aclose()
        nursery.cancel_scope.cancel()
    return out


async def host_pair(rounds: int, mb: int) -> dict[str, object]:
    ka, kb = NodeKey.from_seed(b"\x01" * 32), NodeKey.from_seed(b"\x02" * 32)
    connect_ms, handshake_ms, rtts = [], [], []
    received = trio.Event()
    total = mb * 1024 * 1024
    async with running_host(ka, LOOPBACK) as a, running_host(kb, LOOPBACK) as b:
        async def hs_handler(stream):
            remote = stream.muxed_conn.peer_id.to_base58()
            hs = Handshake(kb, HandshakeOffer(org="b", region="eu"), remote,
                           now_ms=int(time.time() * 1000), nonce=os.urandom(16))
            await drive_handshake(stream, hs)

        async def bulk(stream):
            got = 0
            while got < total:
                got += len(await stream.read(CHUNK))
            received.set()

        async def echo(stream):
            fs = FramedStream(stream)
            while True:
                msg = await fs.receive()
                await fs.send(Pong(nonce=msg.nonce))

        b.set_stream_handler(PROTOCOL_ID, hs_handler)
        b.set_stream_handler(BULK_PROTOCOL, bulk)
        b.set_stream_handler(ECHO_PROTOCOL, echo)
        info = peer_info(kb.peer_id, dialable_addrs(b))
        for _ in range(rounds):
            t = time.perf_counter()
            await a.connect(info)
            connect_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            stream = await a.new_stream(b.get_id(), [PROTOCOL_ID])
            hs = Handshake(ka, HandshakeOffer(org="a", region="eu"), kb.peer_id,
                           now_ms=int(time.time() * 1000), nonce=os.urandom(16))
            await drive_handshake(stream, hs)
            handshake_ms.append((time.perf_counter() - t) * 1000)
            assert hs.accepted, hs.outcome
            await a.disconnect(b.get_id())
            await trio.sleep(0.05)
        await a.connect(info)
        stream = await a.new_stream(b.get_id(), [BULK_PROTOCOL])
        payload = b"\xab" * CHUNK
        t = time.perf_counter()
        for _ in range(total // CHUNK):
            await stream.write(payload)
        await received.wait()
        bulk_s = time.perf_counter() - t
        fs = FramedStream(await a.new_stream(b.get_id(), [ECHO_PROTOCOL]))
        for _ in range(rounds * 20):
            t = time.perf_counter()
            await fs.request(Ping(nonce=b"12345678"))
            rtts.append((time.perf_counter() - t) * 1000)
    return {"connect_ms": connect_ms, "handshake_ms": handshake_ms,
            "throughput_mb_s": total / 1e6 / bulk_s, "rtt_ms": rtts}


async def one_cold_start(seed: int) -> float:
    """Time from calling run_daemon to ready_callback (host, DHT, control socket up)."""
    root = Path(tempfile.mkdtemp(prefix="gdb", dir="/tmp"))
    ready = trio.Event()
    box: list[Daemon] = []

    def on_ready(d: Daemon) -> None:
        box.append(d)
        ready.set()

    async def run() -> None:
        await run_daemon(Home(root), NodeConfig(org="bench", region="eu"),
                         NodeKey.from_seed(bytes([seed]) * 32), cortex=None, listen=LOOPBACK,
                         bootstrap=None, ready_callback=on_ready, handle_signals=False)

    try:
        t = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await ready.wait()
            elapsed = (time.perf_counter() - t) * 1000
            box[0].stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return elapsed


async def cold_start(runs: int) -> list[float]:
    return [await one_cold_start(9 + i) for i in range(runs)]


GD_NODE = Path(sys.executable).with_name("gd-node")
ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("genome", "crdt", "ledger", "motors", "protocol", "node", "cli", "testnet")
HEALTHZ_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthz_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def compile_bytecode() -> None:
    """Our modules' bytecode, as an install leaves it (skips what is up to date)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", *PACKAGES], cwd=ROOT,
                   check=True, capture_output=True, timeout=300)


def process_start_ms(runs: int) -> list[float]:
    """Spawn `gd-node run` on a fresh home and time it until /healthz answers 200 (what
    an orchestrator's readiness probe sees), `runs` times; each process is stopped
    with SIGTERM and reaped before the next."""
    compile_bytecode()
    root = Path(tempfile.mkdtemp(prefix="gdh", dir="/tmp"))
    home = root / "h"
    out = []
    try:
        subprocess.run([str(GD_NODE), "init", "--home", str(home), "--org", "bench",
                        "--region", "eu", "--seed", "11" * 32, "--listen",
                        "/ip4/127.0.0.1/tcp/0"], check=True, capture_output=True, timeout=120)
        port = _free_port()
        config = home / "config.toml"
        text = config.read_text()
        if "[metrics]\n" not in text:
            raise SystemExit("config.toml has no [metrics] section to set the port in")
        head, tail = text.split("[metrics]\n", 1)
        config.write_text(head + "[metrics]\n" + re.sub(r"(?m)^port = \d+", f"port = {port}",
                                                         tail, count=1))
        for _ in range(runs):
            start = time.perf_counter()
            proc = subprocess.Popen([str(GD_NODE), "run", "--home", str(home),
                                     "--log-format", "json"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                while not _healthz_ok(port):
                    if proc.poll() is not None:
                        raise SystemExit(f"gd-node run exited with {proc.returncode}")
                    if time.perf_counter() - start > HEALTHZ_TIMEOUT_S:
                        raise SystemExit(f"no /healthz within {HEALTHZ_TIMEOUT_S} s")
                    time.sleep(0.01)
                out.append((time.perf_counter() - start) * 1000)
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def _python_ms(code: str, runs: int) -> float:
    """Median wall time of `python -c code` in a fresh interpreter, over `runs`."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def interpreter_ms(runs: int) -> float:
    """A bare `python -c pass`: the floor of any process start on this machine."""
    return _python_ms("pass", runs)


def import_ms(runs: int = 3) -> float:
    """A fresh interpreter importing the daemon (libp2p dominates): the other half of a
    process cold start. The median of `runs` (one sample swung by 0.3 s on this
    machine, more than the start it is set beside)."""
    return _python_ms("import gd.node.daemon", runs)


async def main(rounds: int, mb: int) -> dict[str, object]:
    baseline = await tcp_rtt_baseline(rounds * 20)
    pair = await host_pair(rounds, mb)
    starts = await cold_start(3)
    processes = process_start_ms(5)
    rtt = pair["rtt_ms"]
    return {
        "setup": {"rounds": rounds, "bulk_mb": mb, "stack": "TCP+Noise+yamux, loopback",
                  "cpus": os.cpu_count()},
        "connect_ms_p50": statistics.median(pair["connect_ms"]),
        "handshake_ms_p50": statistics.median(pair["handshake_ms"]),
        "throughput_mb_s": pair["throughput_mb_s"],
        "rtt_ms_p50": statistics.median(rtt), "rtt_ms_p99": pct(rtt, 0.99),
        "tcp_rtt_ms_p50": statistics.median(baseline), "tcp_rtt_ms_p99": pct(baseline, 0.99),
        "rtt_ratio_vs_tcp_p50": statistics.median(rtt) / statistics.median(baseline),
        "cold_start_ms_p50": statistics.median(starts),
        "process_import_ms": import_ms(),
        "process_start_healthz_ms_p50": statistics.median(processes),
        "process_start_healthz_ms": [round(t) for t in processes],
        "interpreter_start_ms_p50": interpreter_ms(5),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--mb", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    result = trio.run(main, args.rounds, args.mb)
    width = max(len(k) for k in result)
    for key, value in result.items():
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown}")
    out = Path(__file__).parent / "results" / "p2p.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
