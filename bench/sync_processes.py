"""Cold sync between two real `gd-node run` processes, from `share` to all received
(issue 15's row "cold sync, 100k small genes, two gd-node run processes": goal <= 10 s).

What a deployment does, nothing in-process: two homes made by `gd-node init` on
127.0.0.1 (each its own key, config and Cortex, found through a bootstrap file), N small
genes imported on A with `gd-node genes import` (timed apart), both daemons started and
connected, then `gd-node share --domain turbofan` on both sides (through the running
daemons, which sign, deliver and countersign the agreement). The clock runs from the
first `share` until B's `/metrics` counts all N genes received; B's metrics are polled
in a bounded loop. Sovereignty, the audit record and fsync stay on. Both processes are
stopped and reaped whatever happens; a daemon that dies fails the run with its log.
`cpu_a_s`/`cpu_b_s`: CPU seconds each daemon spent from `share` to the end (steadier
than wall time on a machine shared with other work), and the same per gene moved.

    .venv/bin/python bench/sync_processes.py [--genes 100000] [--timeout 600]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report

from gd.genome import NodeKey
from gd.node.control import ControlError, call
from gd.testnet.procs import terminate_all

GD_NODE = Path(sys.executable).with_name("gd-node")
DOMAIN = "turbofan"
# Polls of B's metrics while genes arrive; each poll is one loopback HTTP request.
POLL_S = 0.1
# Starting and meshing two daemons takes seconds; more than this is a failure.
START_TIMEOUT_S = 120.0
# `port = 0` under [metrics] in the config `gd-node init` writes (comments between).
METRICS_PORT = re.compile(r"(\[metrics\]\n(?:#[^\n]*\n)*port = )0$", re.M)
RECEIVED = re.compile(r'^gd_sync_genes_total\{direction="in"\} ([0-9.e+]+)$', re.M)


class BenchFailed(RuntimeError):
    """The run could not finish (a daemon died, a step timed out): said in one line."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def gd(*args: str, timeout: float = 600) -> str:
    """Run one `gd-node` command; its stdout, or BenchFailed with its stderr."""
    done = subprocess.run([str(GD_NODE), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise BenchFailed(f"gd-node {' '.join(args[:2])} failed: "
                          f"{(done.stderr or done.stdout).strip()[-500:]}")
    return done.stdout


def small_genes(n: int) -> str:
    """N small genes (one codon each, ~0.5 KB signed) as `genes import` JSONL."""
    return "".join(json.dumps({
        "domain": DOMAIN, "name": f"rule-{i:06d}", "action": "inspect",
        "codons": [{"feature": "s11", "op": ">", "threshold": 40 + i % 1000}]}) + "\n"
        for i in range(n))


def make_home(root: Path, n: int, port: int, metrics_port: int) -> tuple[Path, str]:
    """`gd-node init` with a fixed seed (so the peer ids are known) and a metrics port."""
    home = root / f"n{n}"
    seed = n.to_bytes(32, "big")
    gd("init", "--home", str(home), "--org", f"org{n}", "--region", "eu",
       "--listen", f"/ip4/127.0.0.1/tcp/{port}", "--seed", seed.hex())
    config = home / "config.toml"
    text, found = METRICS_PORT.subn(rf"\g<1>{metrics_port}", config.read_text(), count=1)
    if not found:
        raise BenchFailed(f"{config}: no [metrics] port line to set")
    config.write_text(text)
    return home, NodeKey.from_seed(seed).peer_id


def received(metrics_port: int) -> int:
    """Genes B has applied from sync, from its /metrics (0 before the first)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                timeout=5) as reply:
        match = RECEIVED.search(reply.read().decode())
    return int(float(match.group(1))) if match else 0


def wait_connected(homes: list[Path], procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        check_alive(procs, homes)
        try:
            if all(call(h, "status", timeout=5)["peers"] >= 1 for h in homes):
                return
        except (ControlError, OSError):
            pass  # not listening yet
        time.sleep(0.2)
    raise BenchFailed(f"the two daemons did not connect within {START_TIMEOUT_S:.0f} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live descendants so far (Linux
    /proc; 0.0 elsewhere; the verify pool's workers are children): on a shared machine,
    CPU spent says more about a change than wall time alone."""
    total, todo, seen = 0.0, [pid], set()
    while todo and len(seen) < 256:  # bounded: a daemon has a handful of workers
        p = todo.pop()
        seen.add(p)
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()
                         if int(c) not in seen]
        except (OSError, ValueError):
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def check_alive(procs: list[subprocess.Popen[bytes]], homes: list[Path]) -> None:
    for proc, home in zip(procs, homes, strict=True):
        if proc.poll() is not None:
            log = (home / "daemon.log").read_text(errors="replace")[-1500:]
            raise BenchFailed(f"gd-node run on {home.name} exited ({proc.returncode}):\n{log}")


def bench(n: int, timeout_s: float, root: Path,
          log_level: str = "warning") -> list[dict[str, Any]]:
    ports = [free_port() for _ in range(4)]
    (a, a_id), (b, b_id) = (make_home(root, i + 1, ports[i], ports[i + 2]) for i in range(2))
    for home, other, port in ((a, b_id, ports[1]), (b, a_id, ports[0])):
        (home / "boot.toml").write_text(f'[[peers]]\npeer_id = "{other}"\n'
                                        f'addrs = ["/ip4/127.0.0.1/tcp/{port}"]\n')
    genes = root / "genes.jsonl"
    genes.write_text(small_genes(n))
    t = time.perf_counter()
    gd("genes", "import", str(genes), "--batch", "10000", "--home", str(a))
    import_s = time.perf_counter() - t
    print(f"imported {n} genes on A in {import_s:.1f} s", file=sys.stderr)
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for home in (a, b):
            log = (home / "daemon.log").open("wb")
            logs.append(log)
            procs.append(subprocess.Popen(
                [str(GD_NODE), "run", "--home", str(home), "--bootstrap",
                 str(home / "boot.toml"), "--log-level", log_level],
                stdout=subprocess.DEVNULL, stderr=log))
        wait_connected([a, b], procs)
        cpu0 = [cpu_seconds(p.pid) for p in procs]
        t0 = time.perf_counter()
        gd("share", "--with", b_id, "--domain", DOMAIN, "--home", str(a))
        gd("share", "--with", a_id, "--domain", DOMAIN, "--home", str(b))
        share_s = time.perf_counter() - t0
        got, first_s = 0, None
        deadline = time.monotonic() + timeout_s
        while got < n:
            if time.monotonic() > deadline:
                raise BenchFailed(f"B had {got} of {n} genes after {timeout_s:.0f} s")
            check_alive(procs, [a, b])
            time.sleep(POLL_S)
            got = received(ports[3])
            if got and first_s is None:
                first_s = time.perf_counter() - t0
        seconds = time.perf_counter() - t0
        cpu = [cpu_seconds(p.pid) - c for p, c in zip(procs, cpu0, strict=True)]
    finally:
        terminate_all(procs)
        for log in logs:
            log.close()
    return [{"case": "cold sync, gd-node run processes", "genes": n,
             "seconds": round(seconds, 3), "genes_per_s": round(n / seconds),
             "share_s": round(share_s, 3), "first_gene_s": round(first_s or 0.0, 3),
             "import_s": round(import_s, 3), "cpu_a_s": round(cpu[0], 2),
             "cpu_b_s": round(cpu[1], 2),
             # Per gene moved: what a change is compared by on a loaded machine.
             "cpu_a_us_per_gene": round(cpu[0] / n * 1e6),
             "cpu_b_us_per_gene": round(cpu[1] / n * 1e6), "goal_s_100k": 10}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--genes", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="Seconds from share to all received before giving up.")
    parser.add_argument("--log-level", default="warning",
                        choices=("debug", "info", "warning", "error"),
                        help="The daemons' log level (their logs: <home>/daemon.log).")
    parser.add_argument("--keep", action="store_true",
                        help="Keep the two homes (and their logs) and print where.")
    args = parser.parse_args()
    if args.genes < 1 or args.timeout <= 0:
        parser.error("--genes must be at least 1 and --timeout positive")
    # Unix control sockets need short paths: a temporary directory right under /tmp.
    root = Path(tempfile.mkdtemp(prefix="gdsp", dir="/tmp"))
    try:
        rows = bench(args.genes, args.timeout, root, args.log_level)
    except BenchFailed as exc:
        raise SystemExit(f"sync_processes: {exc}") from None
    finally:
        if args.keep:
            print(f"homes kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    report("sync_processes", rows, {"genes": args.genes, "pid": os.getpid(),
                                    "notes": "from the first `gd-node share` until B's "
                                             "/metrics counts every gene received"})


if __name__ == "__main__":
    main()
