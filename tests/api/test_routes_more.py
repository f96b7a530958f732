"""The routes of node/api/views_more.py over real HTTP: rollback, forget, policy test,
ledger consistency, experiences add, and a decision exported as a PDF."""

from __future__ import annotations

import io

import pypdf
from api_support import states
from gd_testkit import key_from_int

from gd.genome.gene import Codon
from gd.ledger.merkle import verify_consistency


async def test_rollback_restores_an_earlier_version(api_node):
    tf = api_node.genes["tf"]
    v2 = tf.edited(key_from_int(1), hlc=tf.hlc + (1 << 16),
                   codons=[Codon.simple("s11", ">", 99.0)])
    api_node.cortex.put_gene(v2)
    async with api_node.client("operator") as http:  # below approver
        assert (await http.post(f"/v1/genes/{tf.id}/rollback",
                                json={"to_version": 1})).status_code == 403
    async with api_node.client("loan-admin") as http:  # outside its scope
        assert (await http.post(f"/v1/genes/{tf.id}/rollback",
                                json={"to_version": 1})).status_code == 404
    async with api_node.client("approver") as http:
        bad = await http.post(f"/v1/genes/{tf.id}/rollback", json={"to_version": 2})
        assert bad.status_code == 409  # not an earlier version
        reply = await http.post(f"/v1/genes/{tf.id}/rollback", json={"to_version": 1})
        assert reply.status_code == 200, reply.text
        assert reply.json()["version"] == 3 and reply.json()["restores"] == 1
        shown = (await http.get(f"/v1/genes/{tf.id}")).json()
    assert shown["version"] == 3
    assert shown["condition"] == tf.condition_text() != v2.condition_text()


async def test_forget_deletes_the_gene_for_admins_only(api_node):
    loan = api_node.genes["loan"]
    async with api_node.client("operator") as http:
        assert (await http.delete(f"/v1/genes/{loan.id}")).status_code == 403
    async with api_node.client("admin") as http:
        reply = await http.delete(f"/v1/genes/{loan.id}")
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"forgotten": loan.id, "tombstones_for": []}
        assert (await http.get(f"/v1/genes/{loan.id}")).status_code == 404
        assert (await http.delete(f"/v1/genes/{loan.id}")).status_code == 404
        audit = (await http.get("/v1/audit/export")).json()
    assert any(r["kind"] == "forget" and r["gene_id"] == loan.id for r in audit)


async def test_policy_test_explains_the_deciding_rule(api_node):
    tf = api_node.genes["tf"]
    peer = str(key_from_int(5).peer_id)
    async with api_node.client("viewer") as http:
        before = await http.get("/v1/policy/test", params={"gene": tf.id, "with": peer,
                                                           "org": "beta", "region": "eu"})
    assert before.status_code == 200, before.text
    assert [r["rule"] for r in before.json()["results"]] == ["default-deny"]
    async with api_node.client("admin") as http:
        shared = await http.post("/v1/share", json={"with": "org:beta", "domain": "turbofan"})
        assert shared.status_code == 200, shared.text
        after = (await http.get("/v1/policy/test", params={
            "gene": tf.id, "with": peer, "org": "beta", "region": "eu"})).json()
        other = (await http.get("/v1/policy/test", params={
            "gene": tf.id, "with": peer, "org": "gamma", "region": "eu"})).json()
        missing = await http.get("/v1/policy/test", params={"gene": tf.id})
    # Our rule now allows it; the peer has not agreed yet (mutual consent), and the
    # explanation says both.
    ours = after["results"][0]
    assert ours["peer"] == peer and ours["allowed"] is False
    assert any("allowed by rule allow:both:turbofan:org:beta" in s for s in ours["steps"])
    assert "not agreed" in ours["reason"]
    assert "default deny" in other["results"][0]["reason"]
    assert missing.status_code == 400
    async with api_node.client("loan-viewer") as http:
        assert (await http.get("/v1/policy/test", params={
            "gene": tf.id, "with": peer})).status_code == 404


async def test_ledger_consistency_proof_verifies(api_node):
    tf = api_node.genes["tf"]
    async with api_node.client("operator") as http:
        for seed in (1, 2):
            made = await http.post(f"/v1/genes/{tf.id}/evaluate",
                                   json={"states": states("turbofan", 1, seed), "seed": seed})
            assert made.status_code == 200, made.text
        head = (await http.get("/v1/ledger/head")).json()
        size = head["size"]
        assert size >= 2
        proof = (await http.get("/v1/ledger/consistency",
                                params={"old": 1, "new": size})).json()
        beyond = await http.get("/v1/ledger/consistency", params={"old": 1,
                                                                  "new": size + 5})
        missing = await http.get("/v1/ledger/consistency")
    assert proof["new_root"] == head["root"]
    verify_consistency(1, size, bytes.fromhex(proof["old_root"]),
                       bytes.fromhex(proof["new_root"]),
                       [bytes.fromhex(h) for h in proof["path"]])
    assert beyond.status_code == 404 and missing.status_code == 400


async def test_add_experience(api_node):
    tf = api_node.genes["tf"]
    state = states("turbofan", 1, 4)[0]
    async with api_node.client("viewer") as http:
        assert (await http.post(f"/v1/genes/{tf.id}/experiences",
                                json={"state": state, "success": True})).status_code == 403
    async with api_node.client("operator") as http:
        reply = await http.post(f"/v1/genes/{tf.id}/experiences",
                                json={"state": state, "success": False, "reward": -2.5,
                                      "note": "bearing wear"})
        assert reply.status_code == 200, reply.text
        bad = await http.post(f"/v1/genes/{tf.id}/experiences",
                              json={"state": {"values": {"s11": 1.0}}, "success": True})
        listed = (await http.get(f"/v1/genes/{tf.id}/experiences")).json()
    assert bad.status_code == 422 and "missing" in bad.json()["detail"]
    assert [(e["id"], e["success"], e["reward"], e["note"]) for e in listed] == [
        (reply.json()["id"], False, -2.5, "bearing wear")]


async def test_decision_pdf_has_inputs_scores_and_explanations(api_node):
    tf = api_node.genes["tf"]
    hot = states("turbofan", 2)
    for s in hot:  # where the gene applies (s11 > 47.6): every motor runs and scores
        s["values"]["s11"] = 48.5
    async with api_node.client("operator") as http:
        made = await http.post(f"/v1/genes/{tf.id}/evaluate",
                               json={"states": hot, "seed": 11})
        assert made.status_code == 200, made.text
        decision = made.json()["decisions"][0]
        full = (await http.get(f"/v1/decisions/{decision['id']}")).json()
        reply = await http.get(f"/v1/decisions/{decision['id']}/pdf")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/pdf"
    reader = pypdf.PdfReader(io.BytesIO(reply.content))
    text = " ".join(page.extract_text() for page in reader.pages).replace("\n", " ")
    assert tf.id in text.replace(" ", "")  # long ids may wrap
    assert f"{decision['cp']:.6f}" in text
    assert len(decision["motors"]) == 4, decision["motors"]
    for motor, result in decision["motors"].items():
        assert f"{motor}: score {result['score']:.6f}" in text
    entity = full["states"][0]["entity"]
    assert f"entity={entity}" in text
    async with api_node.client("loan-viewer") as http:
        assert (await http.get(f"/v1/decisions/{decision['id']}/pdf")).status_code == 404
