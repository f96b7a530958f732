"""The API's security rules against a real daemon over real HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio
from api_support import prepare, start, states

from gd.node.api.problems import MEDIA_TYPE

GD_NODE = str(Path(sys.executable).with_name("gd-node"))


async def test_no_credential_is_401_problem_json(api_node):
    async with api_node.client() as http:
        reply = await http.get("/v1/genes")
    assert reply.status_code == 401
    assert reply.headers["content-type"] == MEDIA_TYPE
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert reply.json()["status"] == 401


async def test_wrong_secret_and_malformed_tokens_are_401(api_node):
    good = api_node.tokens["admin"]
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for token in (forged, "gdn_nothing", "Basic abc"):
        async with api_node.client(token) as http:
            reply = await http.get("/v1/status")
        assert reply.status_code == 401, token
    async with api_node.client() as http:
        reply = await http.get("/v1/status", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert reply.status_code == 401


async def test_viewer_approving_is_403_and_nothing_changes(api_node):
    gene = api_node.genes["pending"]
    async with api_node.client("viewer") as http:
        reply = await http.post(f"/v1/pending/{gene.id}/approve", json={})
        assert reply.status_code == 403
        assert "approver" in reply.json()["detail"]
        pending = await http.get("/v1/pending")
    assert gene.id in [g["id"] for g in pending.json()]
    async with api_node.client("approver") as http:
        reply = await http.post(f"/v1/pending/{gene.id}/approve", json={})
    assert reply.status_code == 200, reply.text
    assert reply.json()[0]["status"] == "native"


async def test_loan_scoped_token_cannot_see_turbofan_genes(api_node):
    tf, loan = api_node.genes["tf"], api_node.genes["loan"]
    async with api_node.client("loan-viewer") as http:
        listed = (await http.get("/v1/genes")).json()
        shown = await http.get(f"/v1/genes/{tf.id}")
        versions = await http.get(f"/v1/genes/{tf.id}/versions")
        own = await http.get(f"/v1/genes/{loan.id}")
        missing = await http.get("/v1/genes/does-not-exist")
        pending = (await http.get("/v1/pending")).json()
    assert {g["domain"] for g in listed["items"]} == {"loan"}
    assert listed["total"] == 2
    assert shown.status_code == 404 and versions.status_code == 404
    # Outside the scope reads exactly like absent: same status, same shape.
    assert missing.status_code == 404
    assert shown.json().keys() == missing.json().keys()
    assert own.status_code == 200 and own.json()["id"] == loan.id
    assert {g["domain"] for g in pending} == {"loan"}


async def test_scoped_approver_cannot_approve_outside_its_domain(api_node):
    """An approver for turbofan approving a loan gene: 404 (it does not exist for it)."""
    async with api_node.client("approver") as http:
        reply = await http.post(f"/v1/pending/{api_node.genes['pending-loan'].id}/approve",
                                json={})
    assert reply.status_code == 404


async def test_decisions_outside_scope_are_404(api_node):
    tf = api_node.genes["tf"]
    from api_support import states

    async with api_node.client("operator") as http:
        made = await http.post(f"/v1/genes/{tf.id}/evaluate",
                               json={"states": states("turbofan", 1), "seed": 3})
    assert made.status_code == 200, made.text
    decision = made.json()["decisions"][0]["id"]
    async with api_node.client("loan-viewer") as http:
        assert (await http.get(f"/v1/decisions/{decision}")).status_code == 404
        assert (await http.get("/v1/decisions")).json()["total"] == 0
    async with api_node.client("viewer") as http:
        assert (await http.get(f"/v1/decisions/{decision}")).status_code == 200


async def test_revoked_token_is_refused_at_once(api_node):
    """Revoked by the CLI in another process: the very next request is 401."""
    async with api_node.client("viewer") as http:
        assert (await http.get("/v1/status")).status_code == 200
        done = await trio.to_thread.run_sync(lambda: subprocess.run(
            [GD_NODE, "tokens", "revoke", api_node.token_ids["viewer"], "--home",
             str(api_node.home.root)], capture_output=True, text=True, timeout=120))
        assert done.returncode == 0, done.stderr
        reply = await http.get("/v1/status")
    assert reply.status_code == 401
    assert "revoked" in reply.json()["detail"]


async def test_mutations_are_attributed_in_the_audit_log(api_node):
    gene = api_node.genes["pending"]
    body = b'{"reason": "not for us"}'
    async with api_node.client("approver") as http:
        assert (await http.post(f"/v1/pending/{gene.id}/reject", content=body, headers={
            "Content-Type": "application/json"})).status_code == 200
    async with api_node.client("admin") as http:
        records = (await http.get("/v1/audit/export")).json()
    calls = [r for r in records if r["kind"] == "api_call"]
    assert calls, records
    last = calls[-1]
    assert last["detail"]["actor"] == f"token:{api_node.token_ids['approver']}"
    assert last["detail"]["path"] == f"/v1/pending/{gene.id}/reject"
    assert last["detail"]["status"] == 200
    assert last["detail"]["payload_sha256"] == hashlib.sha256(body).hexdigest()


async def test_an_evaluation_and_its_audit_record_commit_together(api_node):
    """The decision and who asked for it land in one transaction: no committed state
    of the Cortex, seen after every write, holds a decision of the call without its
    audit record. One record per call, as for every other mutation; a refused
    evaluation is recorded by the pipeline with its status."""
    cortex, gene = api_node.cortex, api_node.genes["tf"]
    audit = api_node.daemon.api.audit
    path = f"/v1/genes/{gene.id}/evaluate"

    def counts() -> tuple[int, int]:
        calls = [r for r in audit.records(kind="api_call") if r.detail["path"] == path]
        return len(list(cortex.decisions(gene.id))), len(calls)

    seen: list[tuple[int, int]] = []
    write = cortex.write

    def spy(fn: Any) -> Any:
        out = write(fn)
        seen.append(counts())
        return out

    cortex.write = spy  # type: ignore[method-assign]
    body = json.dumps({"states": states("turbofan", 1), "seed": 5}).encode()
    try:
        async with api_node.client("operator") as http:
            reply = await http.post(path, content=body,
                                    headers={"Content-Type": "application/json"})
            assert reply.status_code == 200, reply.text
            refused = await http.post(f"/v1/genes/{api_node.genes['pending'].id}/evaluate",
                                      json={"states": states("turbofan", 1)})
            assert refused.status_code == 422, refused.text
    finally:
        del cortex.write
    assert seen and all(decided == recorded for decided, recorded in seen), seen
    assert counts() == (1, 1)
    record = [r for r in audit.records(kind="api_call") if r.detail["path"] == path][-1]
    assert record.detail["actor"] == f"token:{api_node.token_ids['operator']}"
    assert record.detail["status"] == 200
    assert record.detail["payload_sha256"] == hashlib.sha256(body).hexdigest()
    pending_path = f"/v1/genes/{api_node.genes['pending'].id}/evaluate"
    assert [r.detail["status"] for r in audit.records(kind="api_call")
            if r.detail["path"] == pending_path] == [422]


async def test_body_over_the_limit_is_413(nursery, tmp_root):
    node, cfg = prepare(tmp_root, max_body_bytes=1024)
    await start(nursery, node, cfg)
    async with node.client("operator") as http:
        reply = await http.post(f"/v1/genes/{node.genes['tf'].id}/evaluate",
                                content=b"{" + b" " * 4096 + b"}",
                                headers={"Content-Type": "application/json"})
    assert reply.status_code == 413
    node.daemon.stop()


async def test_rate_limit_answers_429_with_retry_after(nursery, tmp_root):
    node, cfg = prepare(tmp_root, rate_per_s=0.5, rate_burst=5)
    await start(nursery, node, cfg)
    statuses = []
    async with node.client("viewer") as http:
        for _ in range(8):
            reply = await http.get("/v1/status")
            statuses.append(reply.status_code)
        assert reply.status_code == 429
        assert int(reply.headers["retry-after"]) >= 1
    assert statuses[:5] == [200] * 5 and statuses[5:] == [429] * 3
    # Per credential: another token still gets through.
    async with node.client("admin") as http:
        assert (await http.get("/v1/status")).status_code == 200
    node.daemon.stop()


async def test_expired_token_is_refused(nursery, tmp_root):
    from gd.node.api.roles import Role
    from gd.node.api.tokens import TokenStore

    node, cfg = prepare(tmp_root)
    _, secret = TokenStore(node.cortex).create(Role.ADMIN, ("*",), expires_in_s=1,
                                               now_ms=1_000)  # expired since 1970
    await start(nursery, node, cfg)
    async with node.client(secret) as http:
        reply = await http.get("/v1/status")
    assert reply.status_code == 401 and "expired" in reply.json()["detail"]
    node.daemon.stop()
