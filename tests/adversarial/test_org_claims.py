"""Issue 11, item 4: org and region claims are self-asserted.

Before org certificates, a fresh key that said `org = beta` in its handshake and sent
its own signed share proposal got every gene `acme` shared with `org:beta`, and acme's
ledger recorded an effective agreement. Now `org:`/`region:` rules match only a claim
certified by an org key acme pins (docs/adr/0008-org-certificates-and-trust-anchors.md).
The attacker tries with no certificate, with a self-signed one (its own "beta" org key),
and with the genuine beta node's certificate (lent); each gets nothing. The genuine beta
node, certified by beta's pinned key, gets the shared genes and an effective agreement
on acme's ledger.
"""

from __future__ import annotations

import contextlib
import time

import trio
from daemon_cluster import DaemonCluster, launch, quiet_libp2p
from gd_testkit import key_from_int, make_gene
from hostile import HostilePeer, hostile_peer

from gd.genome.certificate import NodeCertificate, TrustAnchors
from gd.genome.identity import NodeKey
from gd.node.config import MeshSettings, NodeConfig, SyncSettings
from gd.node.credentials import CERT_FILE, write_certificate
from gd.node.daemon import Daemon
from gd.node.services.sovereignty_service import AGREEMENTS_PROTOCOL_ID
from gd.node.store.audit import AuditKind
from gd.node.store.ledger_store import Ledger
from gd.node.store.policy_store import rule_from_options
from gd.protocol.agreement_messages import DeliveryAck, ProposalDelivery
from gd.protocol.handshake import Accepted
from gd.protocol.sovereignty_agreements import Proposal, ProposalKind
from gd.protocol.sync_frames import SYNC_PROTOCOL_ID, SyncBatch, SyncPull

ACME_ORG = NodeKey.from_seed(b"A" * 32)
BETA_ORG = NodeKey.from_seed(b"B" * 32)
SELF_MADE_BETA = NodeKey.from_seed(b"X" * 32)  # the attacker's own "beta" org key
ACME, BETA = key_from_int(41), key_from_int(42)
REGION = "eu-west"
TRUST = TrustAnchors.of([("acme", ACME_ORG.public_key), ("beta", BETA_ORG.public_key)])
FAST = {"mesh": {"backoff_base_s": 0.2, "backoff_max_s": 1.0, "ping_interval_s": 5},
        "sync": {"debounce_s": 0.05}}
HOUR_MS = 3600 * 1000
NOW_MS = 1_800_000_000_000  # certificates below are valid from well before to long after


def certificate(org_key: NodeKey, org: str, node: NodeKey) -> NodeCertificate:
    now = int(time.time() * 1000)
    return NodeCertificate.issue(org_key, org, node.peer_id, REGION,
                                 not_before_ms=now - HOUR_MS, expires_ms=now + 24 * HOUR_MS)


async def start(cluster: DaemonCluster, nursery: trio.Nursery, n: int, key: NodeKey, org: str,
                org_key: NodeKey, boot: list[Daemon]) -> Daemon:
    """A daemon of `org`, certified by `org_key`, pinning acme's and beta's org keys."""
    home = cluster.home(n)
    write_certificate(home.root / CERT_FILE, certificate(org_key, org, key))
    cfg = NodeConfig(org=org, region=REGION, trusted_orgs=TRUST, mesh=MeshSettings(**FAST["mesh"]),
                     sync=SyncSettings(**FAST["sync"]))
    return await launch(nursery, home, cfg, key, cortex=cluster.cortex(n), boot=boot)


def ledger_kinds(d: Daemon) -> list[str]:
    return [str(e.kind) for e in Ledger(d.cortex.env).entries()]


def effective_audits(d: Daemon, peer: str) -> list[object]:
    return [r for r in d.sovereignty.audit.records(kind=AuditKind.AGREEMENT)
            if r.peer == peer and (r.detail or {}).get("event") == "effective"]


async def claim_beta(evil: HostilePeer, acme: Daemon, cert: bytes) -> None:
    """Handshake as `org = beta` (with `cert`, maybe none), then send acme a signed share
    of turbofan addressed to it: beta's half of an agreement, as the old code saw it."""
    outcome = await evil.handshake(acme, org="beta", region=REGION,
                                   extra={"certificate": cert} if cert else None)
    assert isinstance(outcome, Accepted)  # uncertified peers still connect
    share = Proposal.create(evil.key, ProposalKind.SHARE, acme.peer_id,
                            rule_from_options(acme.peer_id, "turbofan"), hlc=NOW_MS)
    fs = await evil.open(acme, AGREEMENTS_PROTOCOL_ID)
    ack = await fs.request(ProposalDelivery(proposals=(share.encode(),), upto=1))
    assert isinstance(ack, DeliveryAck) and ack.refused == 0 and not ack.effective
    await fs.close()


async def pull_everything(evil: HostilePeer, acme: Daemon) -> list[dict[str, object]]:
    """What acme's sync serves the attacker from the start of its feed."""
    fs = await evil.open(acme, SYNC_PROTOCOL_ID)
    reply = await fs.request(SyncPull(since=0))
    await fs.close()
    assert isinstance(reply, SyncBatch) and not reply.zstd
    return list(reply.open()[0].genes)


async def test_a_fresh_key_claiming_org_beta_gets_nothing_shared_with_org_beta():
    quiet_libp2p()
    with DaemonCluster.in_tmp("gd-org-") as cluster:
        async with trio.open_nursery() as nursery:
            acme = await start(cluster, nursery, 1, ACME, "acme", ACME_ORG, [])
            turbofan = [make_gene(ACME, f"turbofan-{i}", "turbofan", 40.0 + i)
                        for i in range(3)]
            acme.cortex.put_genes(turbofan)
            sov = acme.sovereignty
            assert sov is not None
            await trio.to_thread.run_sync(lambda: sov.store.share(
                rule_from_options("org:beta", "turbofan"), ledger=sov.ledger))

            # What the attacker presents: nothing; a certificate of its own peer id signed
            # by an org key it made up and named beta; the genuine beta node's certificate.
            attempts = {
                "no certificate": lambda evil: b"",
                "self-signed": lambda evil: certificate(SELF_MADE_BETA, "beta", evil).encode(),
                "lent": lambda evil: certificate(BETA_ORG, "beta", BETA).encode(),
            }
            async with contextlib.AsyncExitStack() as stack:
                for i, (how, make_cert) in enumerate(attempts.items()):
                    evil = await stack.enter_async_context(hostile_peer(key_from_int(900 + i)))
                    await claim_beta(evil, acme, make_cert(evil.key))
                    rec = acme.table.get(evil.peer_id)
                    assert rec is not None and rec.org == "beta", how
                    assert rec.certified_org is None and rec.certified_region is None, how
                    await trio.sleep(0.5)  # the sovereignty service meets the new peer
                    assert await pull_everything(evil, acme) == [], how
                    agreement = sov.store.agreement(evil.peer_id, "turbofan")
                    assert not agreement.flows, how
                    assert sov.store.outbox(evil.peer_id) == [], how  # acme never consented
                    assert effective_audits(acme, evil.peer_id) == [], how
                    assert not any(r.peer == evil.peer_id for r in
                                   sov.audit.records(kind=AuditKind.GENE_SENT)), how
                assert "agreement" not in ledger_kinds(acme)

                # The genuine beta node, certified by the key acme pins, gets the genes.
                beta = await start(cluster, nursery, 2, BETA, "beta", BETA_ORG, [acme])
                beta_sov = beta.sovereignty
                assert beta_sov is not None
                await trio.to_thread.run_sync(lambda: beta_sov.store.share(
                    rule_from_options("org:acme", "turbofan"), ledger=beta_sov.ledger))
                beta_sov.policy_changed()
                await cluster.until(lambda: getattr(acme.table.get(BETA.peer_id),
                                                    "certified_org", None) == "beta", timeout=30)
                await cluster.until(lambda: bool(effective_audits(acme, BETA.peer_id)),
                                    timeout=30)
                await cluster.until(lambda: "agreement" in ledger_kinds(acme), timeout=30)
                await cluster.until(lambda: {g.id for g in beta.cortex.genes(
                    origin=ACME.peer_id)} == {g.id for g in turbofan}, timeout=30)
                assert acme.table.get(BETA.peer_id).certified_region == REGION
            cluster.stop_all(acme, beta)
