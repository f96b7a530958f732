"""Leakage properties (issue 7): whatever the order of share, revoke and sync, a peer only
ever receives what the policies allowed at the moment of sending, anonymised fields never
reach the wire in clear, and residency holds across forwarding hops.

The oracle below restates the rules from docs/sovereignty.md independently of
`PolicySet`; the sender side is the real `SyncSender` fed through `OutboundFilter`, and
every check reads the encoded batch bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from gd_testkit import key_from_int
from hypothesis import event, given, settings
from hypothesis import strategies as st
from sov_sim import MemNode, SyncRun, sync

from gd.genome import Codon, Gene, NodeKey, ShareScope
from gd.genome.gene import id_is_bound
from gd.protocol.policy_rules import Direction, Effect, PeerInfo, ResidencyRule, ShareRule, Subject
from gd.protocol.sovereignty import PolicySet
from gd.protocol.sovereignty_anonymise import anonymisation_secret, derived_id, peer_key
from gd.protocol.sync_messages import ChangeBatch

DOMAINS = ("turbofan", "loan", "grid")
ORGS = ("acme", "bobco", "carolco")
REGIONS = ("eu-west", "us-east")
SENDER = key_from_int(101)
PEER_KEYS = [key_from_int(102 + i) for i in range(3)]
HOUR_MS = 3_600_000


def marker(kind: str, n: int) -> str:
    return f"{kind}-secret-{n:04d}-zq"


def make_gene(n: int, domain: str, scope: ShareScope, origin_key: NodeKey = SENDER) -> Gene:
    return Gene.create(origin_key, domain=domain, name=marker("name", n),
                       codons=[Codon.simple("s11", ">", 40.0 + n)], action="inspect",
                       purpose=marker("purpose", n), params={"site": marker("param", n),
                                                             "limit": n},
                       hlc=((1_700_000_000_000 + n * 977_123) << 16) | 3, scope=scope)


def oracle(policy: PolicySet, gene: Gene, peer: PeerInfo) -> tuple[bool, bool]:
    """(may it be sent, must it be anonymised), from the documented rules."""
    me = policy.me
    if gene.origin != me.peer_id and not gene.scope.forward:
        return False, False
    if gene.author == peer.peer_id:  # never back to its author
        return False, False

    def verdict(rules: Sequence[ShareRule], subject: PeerInfo, direction: str
                ) -> tuple[bool, bool, bool]:
        hits = []
        for r in rules:
            if r.domain not in ("*", gene.domain):
                continue
            if str(r.direction) not in ("both", direction):
                continue
            s = r.subject
            if (s.kind == "peer" and s.value == subject.peer_id) or (
                    s.kind == "org" and s.value == subject.org) or (
                    s.kind == "region" and s.value == subject.region):
                hits.append(r)
        if not hits or any(r.effect == "deny" for r in hits):
            return False, False, False
        return True, any(r.anonymize for r in hits), all(r.allow_forward for r in hits)

    ours, anonymize, allow_forward = verdict(policy.rules, peer, "send")
    theirs, _, _ = verdict(policy.remote.get(peer.peer_id, ()), me, "receive")
    if not (ours and theirs):
        return False, False
    if gene.scope.residency and gene.scope.residency != peer.region:
        return False, False
    covering = [r for r in policy.residency if r.domain in ("*", gene.domain)]
    if any(r.region != peer.region for r in covering):
        return False, False
    if gene.origin != me.peer_id:  # only the origin derives: as it is, or not at all
        forward = gene.scope.forward and allow_forward
        residency = gene.scope.residency or (peer.region if forward and covering else "")
        if anonymize or (forward, residency) != (gene.scope.forward, gene.scope.residency):
            return False, False
    return True, anonymize


subjects = st.one_of(st.sampled_from([f"org:{o}" for o in ORGS]),
                     st.sampled_from([f"region:{r}" for r in REGIONS]),
                     st.sampled_from([k.peer_id for k in PEER_KEYS]))
rules = st.builds(
    lambda subject, domain, direction, deny, anonymize, forward: ShareRule(
        Subject.parse(subject), domain, Direction(direction),
        Effect.DENY if deny else Effect.ALLOW, anonymize and not deny, forward and not deny),
    subjects, st.sampled_from((*DOMAINS, "*")), st.sampled_from(("send", "receive", "both")),
    st.sampled_from([False, False, False, True]), st.booleans(), st.booleans())
scopes = st.builds(ShareScope, st.booleans(), st.sampled_from(("", *REGIONS)))
open_scopes = st.builds(ShareScope, st.booleans(), st.sampled_from(("", "", "", *REGIONS)))


def check_batches(run: SyncRun, policy: PolicySet, originals: list[Gene], peer: PeerInfo
                  ) -> int:
    """Every gene in the batches was allowed now; anonymised ones leak nothing in clear."""
    pkey = peer_key(anonymisation_secret(SENDER), peer.peer_id)
    by_id, by_tag = {}, {}
    for g in originals:
        by_id[(g.id, g.version)] = g
        by_tag[(derived_id(pkey, g.id), g.version)] = g  # a derived gene's first parent
    seen = 0
    for data in run.batches:
        batch = ChangeBatch.decode(data)
        for wire in batch.genes:
            gene = Gene.from_wire(wire)
            original = by_id.get((gene.id, gene.version)) or by_tag[(gene.parents[0],
                                                                    gene.version)]
            assert id_is_bound(gene)
            allowed, anonymize = oracle(policy, original, peer)
            assert allowed, f"{original.id} went to {peer} against the policy"
            gene.verify()
            if anonymize:
                for secret in (original.name, original.purpose, original.params["site"],
                               original.id):
                    assert secret.encode() not in data, f"{secret} leaked in clear"
                assert all(k.startswith("anon_") for k in gene.params), \
                    f"parameter names {sorted(gene.params)} leaked in clear"
                assert (gene.hlc >> 16) % HOUR_MS == 0 and gene.hlc & 0xFFFF == 0
            seen += 1
    return seen


@settings(max_examples=100)
@given(st.data())
def test_peers_receive_only_what_policy_allowed_when_sent(data: st.DataObject) -> None:
    peers = [PeerInfo(k.peer_id, data.draw(st.sampled_from(ORGS)),
                      data.draw(st.sampled_from(REGIONS))) for k in PEER_KEYS]
    me = PeerInfo(SENDER.peer_id, "acme", data.draw(st.sampled_from(REGIONS)))
    sender = MemNode(SENDER, me, PolicySet(me))
    receivers = {p.peer_id: MemNode(k, p, PolicySet(p)) for k, p in zip(PEER_KEYS, peers,
                                                                          strict=True)}
    genes_made = 0
    sent_total = anonymised = 0

    def consent(peer: PeerInfo) -> None:
        theirs = ShareRule(Subject.parse(data.draw(st.sampled_from(
            [me.peer_id, f"org:{me.org}", f"region:{me.region}"]))),
            data.draw(st.sampled_from((*DOMAINS, "*", "*"))),
            Direction(data.draw(st.sampled_from(("receive", "both")))))
        sender.policy = sender.policy.with_remote(
            peer.peer_id, (*sender.policy.remote.get(peer.peer_id, ()), theirs))
        node = receivers[peer.peer_id]
        node.policy = node.policy.with_rule(ShareRule(Subject.parse(me.peer_id),
                                                      theirs.domain, Direction.BOTH))
        node.policy = node.policy.with_remote(me.peer_id, (ShareRule(
            Subject.parse(peer.peer_id), "*"),))

    # Start from a policy with something in it, so most runs send and withhold genes.
    for rule in data.draw(st.lists(rules, min_size=0, max_size=3)):
        sender.policy = sender.policy.with_rule(rule)
    for peer in data.draw(st.lists(st.sampled_from(peers), min_size=1, max_size=3)):
        sender.policy = sender.policy.with_rule(ShareRule(
            Subject.parse(data.draw(st.sampled_from([peer.peer_id, f"org:{peer.org}",
                                                     f"region:{peer.region}"]))),
            "*", Direction.BOTH, anonymize=data.draw(st.booleans()),
            allow_forward=data.draw(st.booleans())))
    for peer in peers:
        if data.draw(st.booleans()) or data.draw(st.booleans()):
            consent(peer)
    for _ in range(data.draw(st.integers(2, 6))):
        genes_made += 1
        sender.add(make_gene(genes_made, data.draw(st.sampled_from(DOMAINS)),
                             data.draw(open_scopes)))
    for _ in range(data.draw(st.integers(5, 25))):
        op = data.draw(st.sampled_from(("share", "revoke", "consent", "withdraw", "residency",
                                        "gene", "gene", "foreign", "sync", "sync", "sync")))
        policy = sender.policy
        if op == "share":
            sender.policy = policy.with_rule(data.draw(rules))
        elif op == "revoke" and policy.rules:
            rule = data.draw(st.sampled_from(policy.rules))
            sender.policy = policy.without_rules(rule.subject, rule.domain, rule.direction,
                                                 rule.effect)
            assert rule not in sender.policy.rules
        elif op == "consent":
            consent(data.draw(st.sampled_from(peers)))
        elif op == "withdraw":
            peer = data.draw(st.sampled_from(peers))
            sender.policy = policy.with_remote(peer.peer_id, ())
        elif op == "residency":
            sender.policy = policy.with_residency(ResidencyRule(
                data.draw(st.sampled_from(DOMAINS)), data.draw(st.sampled_from(REGIONS))))
        elif op in ("gene", "foreign"):
            genes_made += 1
            origin = SENDER if op == "gene" else PEER_KEYS[genes_made % len(PEER_KEYS)]
            sender.add(make_gene(genes_made, data.draw(st.sampled_from(DOMAINS)),
                                 data.draw(open_scopes), origin))
        elif op == "sync":
            peer = data.draw(st.sampled_from(peers))
            start = receivers[peer.peer_id].checkpoints.get(me.peer_id, 0)
            run = sync(sender, receivers[peer.peer_id])
            seen = check_batches(run, sender.policy, sender.feed[start:], peer)
            assert seen == len(run.sent)
            expected = sum(oracle(sender.policy, g, peer)[0] for g in sender.feed[start:])
            assert seen == expected, "an allowed gene was withheld"
            sent_total += seen
            anonymised += sum(1 for sent in run.sent if sent.decision.anonymize)
    for node in receivers.values():
        for _, gene in node.received:
            gene.verify()
    event(f"genes sent: {'none' if sent_total == 0 else 'some'}")
    event(f"anonymised genes sent: {'none' if anonymised == 0 else 'some'}")


def test_revoked_share_sends_nothing_after_revocation() -> None:
    bob_key = PEER_KEYS[0]
    me = PeerInfo(SENDER.peer_id, "acme", "eu-west")
    bob = PeerInfo(bob_key.peer_id, "bobco", "eu-west")
    rule = ShareRule(Subject.parse("org:bobco"), "turbofan")
    sender = MemNode(SENDER, me, PolicySet(me, (rule,), (), {bob.peer_id: (
        ShareRule(Subject.parse("org:acme"), "turbofan"),)}))
    receiver = MemNode(bob_key, bob, PolicySet(bob, (ShareRule(Subject.parse(me.peer_id),
                                                               "turbofan"),),
                                               (), {me.peer_id: (rule,)}))
    sender.add(make_gene(1, "turbofan", ShareScope()))
    assert len(sync(sender, receiver).sent) == 1
    sender.policy = sender.policy.without_rules(rule.subject, "turbofan")
    for n in range(2, 6):
        sender.add(make_gene(n, "turbofan", ShareScope()))
    run = sync(sender, receiver)
    assert run.sent == [] and len(receiver.received) == 1
    assert all(ChangeBatch.decode(b).genes == () for b in run.batches)


@settings(max_examples=40)
@given(regions=st.lists(st.sampled_from(REGIONS), min_size=4, max_size=4),
       forward=st.lists(st.booleans(), min_size=4, max_size=4),
       anonymize=st.lists(st.booleans(), min_size=4, max_size=4),
       gene_scopes=st.lists(scopes, min_size=1, max_size=4),
       order=st.permutations([(i, j) for i in range(4) for j in range(4) if i != j]))
def test_residency_holds_across_forwarding_hops(
        regions: list[str], forward: list[bool], anonymize: list[bool],
        gene_scopes: list[ShareScope], order: list[tuple[int, int]]) -> None:
    """Four nodes that all agree to share everything; node 0 keeps `turbofan` in its region.
    However genes hop, no turbofan gene ends up outside that region, and no gene with a
    residency scope outside its region (the origin aside: it holds what it made)."""
    keys = [SENDER, *PEER_KEYS]
    infos = [PeerInfo(k.peer_id, f"org{i}", regions[i]) for i, k in enumerate(keys)]
    nodes = []
    for i, info in enumerate(infos):
        mine = tuple(ShareRule(Subject.parse(o.peer_id), "*", Direction.BOTH, Effect.ALLOW,
                               anonymize[i], forward[i]) for o in infos if o != info)
        remote = {o.peer_id: (ShareRule(Subject.parse(info.peer_id), "*"),)
                  for o in infos if o != info}
        residency = (ResidencyRule("turbofan", regions[0]),) if i == 0 else ()
        nodes.append(MemNode(keys[i], info, PolicySet(info, mine, residency, remote)))
    for n, scope in enumerate(gene_scopes):
        nodes[0].add(make_gene(n, "turbofan" if n % 2 == 0 else "loan", scope))
    for _ in range(2):
        for i, j in order:
            sync(nodes[i], nodes[j])
    for node in nodes[1:]:  # the origin holds its own genes wherever it is
        for gene in node.feed:
            if gene.domain == "turbofan":
                assert node.info.region == regions[0], "turbofan left its region"
            if gene.scope.residency:
                assert node.info.region == gene.scope.residency
