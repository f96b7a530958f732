"""A `gd-node run` process answers without the motors loaded, and loads them when the
API is first asked to evaluate (ADR 0063: the start-up row of issue 15)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
from api_support import states
from gd_node_procs import GD_NODE, daemon_status, gd_node, reap, start_daemon

NUMPY_LIB = "_multiarray_umath"  # numpy's core extension: mapped once numpy is imported


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


async def test_the_daemon_serves_before_loading_the_motors_and_loads_them_on_use(tmp_root):
    home = tmp_root / "node"
    subprocess.run([GD_NODE, "demo", "--dir", str(home), "--org", "acme", "--region", "eu"],
                   check=True, capture_output=True, timeout=120)
    token = json.loads(gd_node("tokens", "create", "--role", "operator", "--domain", "*",
                               "--json", home=home))["token"]
    proc = start_daemon(home, tmp_root / "daemon.log")
    try:
        url = (await daemon_status(home))["api_url"]
        assert NUMPY_LIB not in _maps(proc.pid), "numpy loaded before the first evaluation"
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=auth, timeout=60) as http:
            genes = (await http.get("/v1/genes", params={"domain": "turbofan"})).json()
            assert genes["items"], genes
            gene = genes["items"][0]
            made = await http.post(f"/v1/genes/{gene['id']}/evaluate", json={
                "states": states("turbofan", 4, 5), "seed": 1})
            assert made.status_code == 200, made.text
            assert made.json()["decisions"]
            found = await http.post("/v1/graphql", json={
                "query": "{ decisions(limit: 5) { id } }"})
            assert found.status_code == 200, found.text
            assert found.json()["data"]["decisions"], found.text
        assert NUMPY_LIB in _maps(proc.pid)
    finally:
        reap(proc)
