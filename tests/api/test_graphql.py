"""POST /v1/graphql against a real daemon: nested reads, depth and size limits, scope."""

from __future__ import annotations

import itertools

from api_support import states

from gd.genome.synapse import Synapse, SynapseKind

NESTED = """
query ($domain: String) {
  genes(domain: $domain) {
    id name version
    versions { version versionHash }
    synapses(hops: 2) { distance gene { id domain } }
    decisions { id verdict cp motors { motor score explanation } gene { id } }
  }
}
"""


def link(node, *names: str) -> None:
    """A chain of synapses between the named genes of the fixture."""
    ids = [node.genes[n].id for n in names]
    for a, b in itertools.pairwise(ids):
        node.cortex.add_synapse(Synapse(a, b, SynapseKind.FOLLOWS))


async def test_nested_query_reads_synapses_versions_and_decisions(api_node):
    tf, pending, loan = (api_node.genes[n] for n in ("tf", "pending", "loan"))
    link(api_node, "tf", "pending", "loan")  # tf -> pending (1 hop) -> loan (2 hops)
    async with api_node.client("operator") as http:
        made = await http.post(f"/v1/genes/{tf.id}/evaluate",
                               json={"states": states("turbofan", 2), "seed": 5})
        assert made.status_code == 200, made.text
        reply = await http.post("/v1/graphql", json={"query": NESTED,
                                                     "variables": {"domain": "turbofan"}})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert "errors" not in body, body
    by_id = {g["id"]: g for g in body["data"]["genes"]}
    assert set(by_id) == {tf.id, pending.id}
    gene = by_id[tf.id]
    assert gene["versions"] == [{"version": 1, "versionHash": tf.version_hash.hex()}]
    assert [(s["distance"], s["gene"]["id"]) for s in gene["synapses"]] == [
        (1, pending.id), (2, loan.id)]
    made_ids = [d["id"] for d in made.json()["decisions"]]
    assert sorted(d["id"] for d in gene["decisions"]) == sorted(made_ids)
    assert all(d["gene"]["id"] == tf.id and len(d["motors"]) >= 1 for d in gene["decisions"])


async def test_too_deep_is_refused(api_node):
    deep = "{ genes { synapses { gene { synapses { gene { synapses { gene { id } } } } } } } }"
    async with api_node.client("viewer") as http:
        reply = await http.post("/v1/graphql", json={"query": deep})
        ok = await http.post("/v1/graphql", json={"query": "{ genes { synapses { gene { "
                                                           "synapses { gene { id } } } } } }"})
    assert reply.status_code == 400
    assert "nests 8 levels" in reply.json()["errors"][0]["message"]
    assert ok.status_code == 200 and "errors" not in ok.json()


async def test_oversized_result_is_refused_not_truncated(api_node):
    tf = api_node.genes["tf"]
    async with api_node.client("operator") as http:
        made = await http.post(f"/v1/genes/{tf.id}/evaluate",
                               json={"states": states("turbofan", 60), "seed": 9})
        assert made.status_code == 200, made.text
        assert len(made.json()["decisions"]) == 60
        # 60 decisions, each with its gene's 60 decisions, each with its gene: ~7,000.
        big = ("{ decisions(limit: 500) { id gene { decisions(limit: 500) { id gene { id }"
               " } } } }")
        reply = await http.post("/v1/graphql", json={"query": big})
        small = await http.post("/v1/graphql", json={"query": "{ decisions(limit: 500) "
                                                              "{ id gene { id } } }"})
    assert reply.status_code == 413
    assert "more than" in reply.json()["detail"]
    assert small.status_code == 200 and len(small.json()["data"]["decisions"]) == 60


async def test_loan_scoped_token_sees_no_turbofan_genes(api_node):
    tf = api_node.genes["tf"]
    link(api_node, "loan", "tf")
    async with api_node.client("operator") as http:
        made = await http.post(f"/v1/genes/{tf.id}/evaluate",
                               json={"states": states("turbofan", 1), "seed": 2})
        assert made.status_code == 200
    query = f"""{{
      genes {{ id domain synapses(hops: 3) {{ gene {{ id }} }} }}
      gene(id: "{tf.id}") {{ id }}
      decisions(domain: "turbofan") {{ id }}
      all: decisions {{ id gene {{ id }} }}
      experiences(gene: "{tf.id}") {{ id }}
    }}"""
    async with api_node.client("loan-viewer") as http:
        reply = await http.post("/v1/graphql", json={"query": query})
    assert reply.status_code == 200, reply.text
    data = reply.json()["data"]
    assert {g["domain"] for g in data["genes"]} == {"loan"}
    assert all(s == [] for s in (g["synapses"] for g in data["genes"]))
    assert data["gene"] is None
    assert data["decisions"] == [] and data["all"] == [] and data["experiences"] == []


async def test_mutations_and_bad_queries_are_refused(api_node):
    async with api_node.client("admin") as http:
        mutation = await http.post("/v1/graphql", json={"query": "mutation { x }"})
        syntax = await http.post("/v1/graphql", json={"query": "{ genes { id "})
        unknown = await http.post("/v1/graphql", json={"query": "{ secrets { id } }"})
    assert mutation.status_code == syntax.status_code == unknown.status_code == 400
    async with api_node.client() as http:
        assert (await http.post("/v1/graphql", json={"query": "{ genes { id } }"})
                ).status_code == 401
