"""Durable jobs: progress, result, signed webhook, SSE events, and resumption after a
real `gd-node run` is killed with SIGKILL mid-job."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess

import httpx
import trio
from api_support import states
from gd_node_procs import GD_NODE, daemon_status, gd_node, reap, start_daemon

from gd.node.api.job_store import JobStore
from gd.node.api.jobs import SIGNATURE_HEADER
from gd.node.store.cortex import Cortex

JOB_TIMEOUT_S = 240.0


async def _wait_job(http: httpx.AsyncClient, job_id: str, done_states=("succeeded",),
                    timeout: float = JOB_TIMEOUT_S) -> dict:
    with trio.fail_after(timeout):
        while True:
            job = (await http.get(f"/v1/jobs/{job_id}")).json()
            if job["state"] in done_states:
                return job
            await trio.sleep(0.1)


async def _webhook_receiver(nursery, received: list) -> int:
    """A one-purpose HTTP server on 127.0.0.1: records each POST, answers 204."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def serve(stream: trio.SocketStream) -> None:
        data = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
            headers = {k.lower(): v for k, v in headers.items()}
            while len(body) < int(headers["content-length"]):
                body += await stream.receive_some(65536)
        received.append((headers, body))
        await stream.send_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await stream.aclose()

    nursery.start_soon(trio.serve_listeners, serve, listeners)
    return listeners[0].socket.getsockname()[1]


async def test_evaluation_job_runs_reports_and_signs_its_webhook(api_node, nursery):
    received: list = []
    port = await _webhook_receiver(nursery, received)
    gene = api_node.genes["tf"]
    batch = states("turbofan", 20)
    secret = "s3cret-for-hmac"
    events: list[str] = []

    async def listen() -> None:
        async with api_node.client("viewer") as http, http.stream(
                "GET", "/v1/events", params={"kinds": "job.progress,job.finished"}) as sse:
            async for line in sse.aiter_lines():
                if line.startswith("event: "):
                    events.append(line[7:])
                    if line == "event: job.finished":
                        return

    nursery.start_soon(listen)
    await trio.sleep(0.3)
    async with api_node.client("operator") as http:
        made = await http.post("/v1/jobs", json={
            "kind": "evaluate", "gene_id": gene.id, "states": batch, "seed": 5,
            "webhook": {"url": f"http://127.0.0.1:{port}/hook", "secret": secret}})
        assert made.status_code == 202, made.text
        job_id = made.json()["id"]
        early = await http.get(f"/v1/jobs/{job_id}/result")
        job = await _wait_job(http, job_id)
        result = (await http.get(f"/v1/jobs/{job_id}/result")).json()
    assert early.status_code in (200, 409)
    assert job["done"] == job["total"] == 20 and job["progress"] == 1.0
    assert len(result["result"]["decisions"]) == 20
    assert sum(result["result"]["verdicts"].values()) == 20
    assert "webhook_secret" not in job
    with trio.fail_after(30):
        while not received:
            await trio.sleep(0.05)
    headers, body = received[0]
    t, _, mac = headers[SIGNATURE_HEADER.lower()].partition(",v1=")
    expected = hmac.new(secret.encode(), t.removeprefix("t=").encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(mac, expected)
    assert json.loads(body)["job"]["id"] == job_id
    with trio.fail_after(30):
        while "job.finished" not in events:
            await trio.sleep(0.05)
    assert events.count("job.progress") >= 2  # 20 states, chunks of 16


async def test_loan_token_cannot_see_or_cancel_a_turbofan_job(api_node):
    async with api_node.client("operator") as http:
        job = (await http.post("/v1/jobs", json={
            "kind": "evaluate", "gene_id": api_node.genes["tf"].id,
            "states": states("turbofan", 1), "seed": 1})).json()
    async with api_node.client("loan-admin") as http:
        assert (await http.get(f"/v1/jobs/{job['id']}")).status_code == 404
        assert (await http.post(f"/v1/jobs/{job['id']}/cancel")).status_code == 404
        assert (await http.get("/v1/jobs")).json()["total"] == 0


async def test_webhook_host_must_be_allow_listed(api_node):
    async with api_node.client("operator") as http:
        reply = await http.post("/v1/jobs", json={
            "kind": "evaluate", "gene_id": api_node.genes["tf"].id,
            "states": states("turbofan", 1),
            "webhook": {"url": "http://10.0.0.1/hook", "secret": "x"}})
    assert reply.status_code == 422 and "webhook_hosts" in reply.json()["detail"]


async def test_sigkill_mid_job_then_restart_resumes_it_exactly_once(tmp_root):
    home = tmp_root / "node"
    subprocess.run([GD_NODE, "demo", "--dir", str(home), "--org", "acme", "--region", "eu"],
                   check=True, capture_output=True, timeout=120)
    with (home / "config.toml").open("a") as cfg:
        cfg.write('\n[api]\nrate_per_s = 1000.0\nrate_burst = 1000\n')
    token = json.loads(gd_node("tokens", "create", "--role", "operator", "--domain", "*",
                            "--json", home=home))["token"]
    log = tmp_root / "daemon.log"
    proc = start_daemon(home, log)
    try:
        url = (await daemon_status(home))["api_url"]
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=auth, timeout=60) as http:
            genes = (await http.get("/v1/genes", params={"domain": "turbofan",
                                                          "status": "native"})).json()
            gene_id = genes["items"][0]["id"]
            n = 1000  # long enough that the kill lands mid-job on a fast machine
            job = (await http.post("/v1/jobs", json={
                "kind": "evaluate", "gene_id": gene_id, "states": states("turbofan", n, 11),
                "seed": 9})).json()
            with trio.fail_after(JOB_TIMEOUT_S):
                while (await http.get(f"/v1/jobs/{job['id']}")).json()["done"] < 16:
                    await trio.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # What the dead daemon left on disk: the kill must have landed mid-job (read
        # before the restart, which resumes the job at once).
        with Cortex.open(home / "cortex", readonly=True) as cortex:
            mid = JobStore(cortex).require(job["id"])
        assert mid.state == "running" and 16 <= mid.done < n, "the kill must land mid-job"
        proc = start_daemon(home, log)
        url = (await daemon_status(home))["api_url"]
        async with httpx.AsyncClient(base_url=url, headers=auth, timeout=60) as http:
            final = await _wait_job(http, job["id"])
            decisions = (await http.get("/v1/decisions", params={
                "gene": gene_id, "limit": 1000})).json()
        assert final["attempts"] == 2 and final["done"] == n
        result_ids = final["result"]["decisions"]
        assert len(result_ids) == len(set(result_ids)) == n
        ours = [d for d in decisions["items"] if d["seed"] == 9]
        assert len(ours) == n  # exactly one decision per state, across the kill
    finally:
        reap(proc)
