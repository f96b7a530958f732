"""HTTP API benchmark: a real `gd-node run` serving HTTPS (TLS 1.3) on 127.0.0.1.

    .venv/bin/python bench/api.py [--evals 100] [--gets 3000] [--concurrency 16] [--jobs 20]

Prints a table and writes bench/results/api.json. The daemon runs in its own process,
the client (httpx, keep-alive) in this one, so on a 2-core machine each has a core.

* evaluate: one state through POST /v1/genes/{id}/evaluate (auth, rate limit, audit
  record, motors, decision and ledger writes), p50/p99 of --evals calls; baseline = the
  same `gd.node.app.decisions.evaluate_gene` call in-process on the same Cortex, each
  right after its HTTPS twin (so both see the same load on a shared machine) — the
  ratio, and the median difference of the pairs, is what the front door costs. Goal:
  p50 < 15 ms.
* gets: authenticated GET /v1/genes/{id} per second, --concurrency requests in flight,
  twice: with httpx (the client costs about as much CPU per request as the server, and
  shares the 2 cores), and with a minimal keep-alive TLS client in threads, which leaves
  the daemon the CPU and so measures it. Goal: >= 1,000/s on 2 cores.
* jobs: --jobs evaluation jobs of 16 states each, queued at once; jobs/s and states/s
  until all have succeeded (the runner runs one job at a time, in chunks of 16).

Medians are reported, never asserted (timings depend on the machine and its load).
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from common import median, percentile, report

from gd.motors.domains import get_domain
from gd.node.app import decisions as dec
from gd.node.home import Home
from gd.node.local import open_local

GD_NODE = str(Path(sys.executable).with_name("gd-node"))
# The loopback certificate the API's TLS tests use too (one helper for both).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
from tls_cert import self_signed  # noqa: E402


def cli(*args: str) -> str:
    return subprocess.run([GD_NODE, *args], check=True, capture_output=True, text=True,
                          timeout=120).stdout


def api_url(home: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = subprocess.run([GD_NODE, "status", "--json", "--home", str(home)],
                             capture_output=True, text=True, timeout=60)
        if out.returncode == 0 and json.loads(out.stdout)["daemon"].get("api_url"):
            return str(json.loads(out.stdout)["daemon"]["api_url"])
        time.sleep(0.2)
    raise RuntimeError("the daemon did not report its API URL within 60 s")


def one_state(seed: int) -> dict[str, Any]:
    s = get_domain("turbofan").demo_states(1, seed)[0]
    return {"values": dict(s.values), "entity": s.entity, "t": s.t}


async def bench_http(url: str, token: str, cert: Path, home: Path, gene_id: str,
                     args: Any) -> dict[str, Any]:
    verify = ssl.create_default_context(cafile=str(cert))
    limits = httpx.Limits(max_connections=args.concurrency,
                          max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=url, verify=verify, limits=limits, timeout=60,
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        # Each HTTPS call is paired with the same call in-process, one after the other:
        # on a shared machine the load changes from second to second, and a baseline
        # measured a minute later would compare two different machines.
        evals, local = [], []
        with open_local(Home.resolve(home)) as node:
            node.cortex.require_gene(gene_id)
            for i in range(args.evals):
                body = {"states": [one_state(1000 + i)], "seed": i}
                start = time.perf_counter()
                reply = await http.post(f"/v1/genes/{gene_id}/evaluate", json=body)
                evals.append(time.perf_counter() - start)
                reply.raise_for_status()
                state = get_domain("turbofan").demo_states(1, 9000 + i)
                start = time.perf_counter()
                dec.evaluate_gene(node, gene_id, state, seed=i)
                local.append(time.perf_counter() - start)
        done = 0
        start = time.perf_counter()

        async def worker(n: int) -> None:
            nonlocal done
            for _ in range(n):
                (await http.get(f"/v1/genes/{gene_id}")).raise_for_status()
                done += 1

        per = args.gets // args.concurrency
        async with trio.open_nursery() as nursery:
            for _ in range(args.concurrency):
                nursery.start_soon(worker, per)
        gets_s = done / (time.perf_counter() - start)
        ids = []
        start = time.perf_counter()
        for j in range(args.jobs):
            batch = [one_state(5000 + 16 * j + k) for k in range(16)]
            reply = await http.post("/v1/jobs", json={"kind": "evaluate", "gene_id": gene_id,
                                                      "states": batch, "seed": j})
            reply.raise_for_status()
            ids.append(reply.json()["id"])
        for job_id in ids:
            while (await http.get(f"/v1/jobs/{job_id}")).json()["state"] != "succeeded":
                await trio.sleep(0.05)
        jobs_wall = time.perf_counter() - start
    return {"evals": evals, "local": local, "gets_s": gets_s, "jobs_wall": jobs_wall}


def _raw_gets(host: str, port: int, context: ssl.SSLContext, request: bytes, n: int,
              out: list[int]) -> None:
    """n keep-alive GETs on one TLS connection, each answer read whole (headers, then
    Content-Length bytes): a load generator far cheaper per request than httpx, so the
    daemon, not the client, is what the number measures."""
    import socket

    with socket.create_connection((host, port), timeout=60) as raw, \
            context.wrap_socket(raw, server_hostname=host) as sock:
        buf = b""
        for _ in range(n):
            sock.sendall(request)
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("the server closed the connection")
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.split(b"\r\n")[0].decode())
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            while len(buf) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("the server closed the connection")
                buf += chunk
            buf = buf[length:]
            out.append(1)


def bench_raw_gets(url: str, token: str, cert: Path, gene_id: str, total: int,
                   connections: int) -> float:
    """Authenticated GET /v1/genes/{id} per second over `connections` TLS connections
    (one thread each)."""
    import threading
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    context = ssl.create_default_context(cafile=str(cert))
    request = (f"GET /v1/genes/{gene_id} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Authorization: Bearer {token}\r\nAccept: application/json\r\n\r\n"
               ).encode()
    done: list[int] = []
    per = total // connections
    threads = [threading.Thread(target=_raw_gets, args=(host, port, context, request, per,
                                                        done)) for _ in range(connections)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    elapsed = time.perf_counter() - start
    if len(done) != per * connections:
        raise RuntimeError(f"{len(done)} of {per * connections} GETs answered")
    return len(done) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evals", type=int, default=100)
    parser.add_argument("--gets", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--profile", default="", metavar="PATH",
                        help="run the daemon under cProfile, stats to PATH (slower)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gdbench-api", dir="/tmp"))
    home = root / "node"
    proc = None
    try:
        cli("demo", "--dir", str(home), "--org", "bench", "--region", "eu")
        cert, key = self_signed(home)
        with (home / "config.toml").open("a") as cfg:
            cfg.write(f'\n[api]\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
                      "rate_per_s = 1000000.0\nrate_burst = 1000000\n")
        token = json.loads(cli("tokens", "create", "--role", "admin", "--domain", "*",
                               "--label", f"bench-{secrets.token_hex(2)}", "--json",
                               "--home", str(home)))["token"]
        # --profile: the daemon runs under cProfile (stats written when it stops).
        prefix = ([sys.executable, "-m", "cProfile", "-o", str(Path(args.profile).resolve()),
                   GD_NODE] if args.profile else [GD_NODE])
        proc = subprocess.Popen([*prefix, "run", "--home", str(home), "--log-format", "json",
                                 "--log-level", "warning"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        url = api_url(home)
        genes = json.loads(cli("genes", "list", "--domain", "turbofan", "--status", "native",
                               "--json", "--home", str(home)))
        gene_id = genes[0]["id"]
        http = trio.run(bench_http, url, token, cert, home, gene_id, args)
        raw_gets_s = bench_raw_gets(url, token, cert, gene_id, args.gets, args.concurrency)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
    evals_ms = [s * 1000 for s in http["evals"]]
    local_ms = [s * 1000 for s in http["local"]]
    pairs = [a / b for a, b in zip(evals_ms, local_ms, strict=True)]
    rows = [
        {"measure": "evaluate 1 state over HTTPS", "p50_ms": median(evals_ms),
         "p99_ms": percentile(evals_ms, 99), "goal": "p50 < 15 ms"},
        {"measure": "evaluate 1 state in-process", "p50_ms": median(local_ms),
         "p99_ms": percentile(local_ms, 99), "goal": "baseline"},
        {"measure": "HTTPS / in-process (p50)", "ratio": median(evals_ms) / median(local_ms)},
        {"measure": "HTTPS - in-process, median of pairs", "p50_ms": median(
            [a - b for a, b in zip(evals_ms, local_ms, strict=True)]),
         "ratio": median(pairs)},
        {"measure": f"authenticated GETs/s, httpx client ({args.concurrency} in flight)",
         "per_s": http["gets_s"]},
        {"measure": f"authenticated GETs/s, raw TLS client ({args.concurrency} conns)",
         "per_s": raw_gets_s, "goal": ">= 1000/s"},
        {"measure": f"jobs of 16 states ({args.jobs})", "per_s": args.jobs / http["jobs_wall"],
         "states_per_s": 16 * args.jobs / http["jobs_wall"]},
    ]
    report("api", rows, {"args": vars(args), "tls": "1.3", "server": "hypercorn trio"})


if __name__ == "__main__":
    main()
