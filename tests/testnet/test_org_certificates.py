"""The testnet certifies every node by its org's seeded key and pins every org everywhere,
so `org:`/`region:` rules work on `make run` as in a real federation (docs/adr/0008)."""

from __future__ import annotations

from pathlib import Path

from gd.genome.certificate import NodeCertificate, check_certificate
from gd.node.credentials import load_credentials
from gd.node.home import Home
from gd.node.local import load_identity
from gd.testnet.build import init_node_home
from gd.testnet.org_keys import org_key
from gd.testnet.plan import make_plan, org_names_of_testnets


def test_every_testnet_node_is_certified_under_keys_every_node_pins(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, orgs=3, regions=2, seed=7)
    for node in plan.nodes:
        init_node_home(node, plan)
    orgs = {n.org for n in plan.nodes}
    for node in plan.nodes:
        home = Home.resolve(node.home)
        cfg, key = load_identity(home)
        creds = load_credentials(home.root, cfg, key, None)
        # every org of the plan, and every org a later `testnet join` can add
        trusted = set(creds.trust.orgs)
        assert trusted == set(org_names_of_testnets()) and orgs <= trusted
        for other in plan.nodes:  # node's certificate checks out on every node
            other_home = Home.resolve(other.home)
            other_cfg, other_key = load_identity(other_home)
            theirs = load_credentials(other_home.root, other_cfg, other_key, None)
            cert = check_certificate(creds.certificate, peer_id=key.peer_id, org=node.org,
                                     region=node.region, trust=theirs.trust,
                                     now_ms=cert_time(creds.certificate))
            assert cert.org_key == org_key(7, node.org).public_key
    assert org_key(7, "acme") != org_key(8, "acme")  # the seed matters


def cert_time(data: bytes) -> int:
    return NodeCertificate.decode(data).not_before_ms + 1
