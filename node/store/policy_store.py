"""Share rules, agreements and the peer directory, persisted in the Cortex.

Sub-databases (keys are ASCII joined by NUL, values canonical msgpack):

    sov_rules       rule_id -> ShareRule           our share rules
    sov_residency   rule_id -> ResidencyRule        our residency rules
    sov_remote      peer NUL rule_id -> Proposal    peers' in-force shares addressed to us
    sov_agreements  peer NUL domain -> Agreement    both sides' shares in force, the state
    sov_certified_peers  peer -> PeerInfo           each peer's certified org and region
    sov_outbox      peer NUL seq -> Proposal        signed proposals still to deliver
                                                    (PROPOSAL_OUTBOX_DB)
    sov_marks       peer NUL rule_id -> u64         newest proposal stamp applied per rule
    sov_counters    name -> u64                     counters that never go back (below)

Every operation (a share, a revoke, a received proposal, a new peer) is ONE write
transaction together with its audit record, so a crash leaves the policy and its
audit trail agreeing. Ledger records are appended after the commit: the ledger may
live in the same LMDB environment, where a nested write transaction would deadlock,
and the ledger's idempotency keys make a retried record harmless.

Agreements follow Syncthing's mutual consent: our signed share is the proposal, the
peer's matching share the acceptance (either may come first). The daemon delivers the
outbox over the sync protocol and calls `receive_proposal` with what peers send.

Three rules keep each peer's view of our consent true (the federation simulation found
each one broken, docs/simulation.md):

* Our shares are tracked per (peer, rule id), not per (peer, domain): two allow rules
  may match one peer and domain (a peer rule and an org rule), each is proposed to the
  peer, and revoking either tells every peer it was proposed to.
* Proposals carry a stamp from a persisted counter that only grows (`max(hlc, last +
  1)`), and a receiver ignores a proposal not newer than the last one it applied for
  the same (sender, rule id): a duplicated or delayed share arriving after its revoke
  cannot put it back in force, and a clock stepped back cannot make a new share stale.
* Outbox sequence numbers come from a persisted per-peer counter that never restarts,
  so an acknowledgement of old numbers can never delete a newer entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from gd.crdt.hlc import unpack as unpack_hlc
from gd.genome import canonical
from gd.genome.errors import ValidationError
from gd.genome.identity import NodeKey
from gd.node.clock import hlc_now
from gd.node.store.audit import AuditKind, AuditLog, LedgerSink, idempotency_key
from gd.node.store.cortex import Cortex
from gd.node.store.lmdb_tables import SEP, U64, Txn, get_u64, join_key, put_u64, scan_prefix
from gd.node.store.proposal_bounds import ProposalLimit, check_room, idle_unagreed
from gd.protocol.policy_rules import (
    MAX_RULES,
    Direction,
    Effect,
    PeerInfo,
    ResidencyRule,
    ShareRule,
    Subject,
)
from gd.protocol.sovereignty import PolicySet
from gd.protocol.sovereignty_agreements import (
    Agreement,
    AgreementState,
    Proposal,
    ProposalError,
    ProposalKind,
    ProposalOutcome,
    with_share,
    without_rule,
)

RULES_DB: Final = "sov_rules"
RESIDENCY_DB: Final = "sov_residency"
REMOTE_DB: Final = "sov_remote"
AGREEMENTS_DB: Final = "sov_agreements"
# Renamed from "sov_peers" with org certificates (ADR 0008): records written before held
# self-asserted org/region claims, and a rule shared later must not match those.
PEERS_DB: Final = "sov_certified_peers"
# Signed proposals still to deliver (not the ledger's statement outbox, `ledger_outbox`).
PROPOSAL_OUTBOX_DB: Final = "sov_outbox"
MARKS_DB: Final = "sov_marks"
COUNTERS_DB: Final = "sov_counters"
_STAMP_COUNTER: Final = b"proposal-stamp"
_OUTBOX_COUNTER: Final = b"outbox" + b"\x00"



class PolicyStore:
    """This node's sovereignty state in its Cortex. `me` is its own peer info."""

    def __init__(self, cortex: Cortex, key: NodeKey, *, org: str, region: str,
                 audit: AuditLog | None = None) -> None:
        self.cortex = cortex
        self.key = key
        self.me = PeerInfo(key.peer_id, org, region)
        self.audit = audit if audit is not None else AuditLog(cortex)
        self.dbs = {name: cortex.open_db(name) for name in (
            RULES_DB, RESIDENCY_DB, REMOTE_DB, AGREEMENTS_DB, PEERS_DB, PROPOSAL_OUTBOX_DB,
            MARKS_DB, COUNTERS_DB)}

    # -- reading ------------------------------------------------------------------------
    def rules(self) -> list[ShareRule]:
        with self.cortex.env.begin() as txn:
            return [ShareRule.from_plain(canonical.decode(v))
                    for _, v in scan_prefix(txn, self.dbs[RULES_DB])]

    def residency_rules(self) -> list[ResidencyRule]:
        with self.cortex.env.begin() as txn:
            return [ResidencyRule.from_plain(canonical.decode(v))
                    for _, v in scan_prefix(txn, self.dbs[RESIDENCY_DB])]

    def remote_rules(self) -> dict[str, tuple[ShareRule, ...]]:
        out: dict[str, list[ShareRule]] = {}
        with self.cortex.env.begin() as txn:
            for key, raw in scan_prefix(txn, self.dbs[REMOTE_DB]):
                out.setdefault(key.split(SEP, 1)[0].decode(), []).append(
                    Proposal.decode(raw).rule)
        return {peer: tuple(rules) for peer, rules in out.items()}

    def policies(self) -> PolicySet:
        """The current policy as one value: what the sync filters evaluate."""
        return PolicySet(self.me, tuple(self.rules()), tuple(self.residency_rules()),
                         self.remote_rules())

    def agreements(self) -> list[Agreement]:
        with self.cortex.env.begin() as txn:
            return [Agreement.from_plain(canonical.decode(v))
                    for _, v in scan_prefix(txn, self.dbs[AGREEMENTS_DB])]

    def peer(self, peer_id: str) -> PeerInfo | None:
        with self.cortex.env.begin() as txn:
            raw = txn.get(peer_id.encode(), db=self.dbs[PEERS_DB])
        return PeerInfo.from_plain(canonical.decode(raw)) if raw else None

    def peers(self) -> list[PeerInfo]:
        with self.cortex.env.begin() as txn:
            return [PeerInfo.from_plain(canonical.decode(v))
                    for _, v in scan_prefix(txn, self.dbs[PEERS_DB])]

    def outbox(self, peer_id: str) -> list[tuple[int, bytes]]:
        """Signed proposals waiting for delivery to `peer_id`: (seq, bytes), oldest first."""
        prefix = peer_id.encode() + SEP
        with self.cortex.env.begin() as txn:
            return [(U64.unpack(k[len(prefix):])[0], v)
                    for k, v in scan_prefix(txn, self.dbs[PROPOSAL_OUTBOX_DB], prefix)]

    def delivered(self, peer_id: str, upto: int) -> None:
        """Drop `peer_id`'s outbox entries up to `upto` (the peer acknowledged them)."""
        prefix = peer_id.encode() + SEP

        def run(txn: Txn) -> None:
            for key, _ in list(scan_prefix(txn, self.dbs[PROPOSAL_OUTBOX_DB], prefix)):
                if U64.unpack(key[len(prefix):])[0] <= upto:
                    txn.delete(key, db=self.dbs[PROPOSAL_OUTBOX_DB])

        self.cortex.write(run)

    # -- internals (all inside one write transaction) -----------------------------------
    def _peers_matching(self, txn: Txn, subject: Subject) -> list[PeerInfo]:
        known = [PeerInfo.from_plain(canonical.decode(v))
                 for _, v in scan_prefix(txn, self.dbs[PEERS_DB])]
        found = [p for p in known if subject.matches(p)]
        if subject.kind == "peer" and not found:
            found = [PeerInfo(subject.value)]
        return [p for p in found if p.peer_id != self.me.peer_id]

    def _agreement(self, txn: Txn, peer: str, domain: str) -> Agreement:
        raw = txn.get(join_key(peer, domain), db=self.dbs[AGREEMENTS_DB])
        return Agreement.from_plain(canonical.decode(raw)) if raw else Agreement(peer, domain)

    def _put_agreement(self, txn: Txn, agreement: Agreement) -> None:
        txn.put(join_key(agreement.peer, agreement.domain), canonical.encode(agreement.to_plain()),
                db=self.dbs[AGREEMENTS_DB])

    def _counter(self, txn: Txn, name: bytes) -> int:
        return get_u64(txn, self.dbs[COUNTERS_DB], name)

    def _set_counter(self, txn: Txn, name: bytes, value: int) -> None:
        put_u64(txn, self.dbs[COUNTERS_DB], name, value)

    def _stamp(self, txn: Txn, hlc: int) -> int:
        """The stamp for the proposals of one operation: `hlc`, or just above the last
        stamp used when the clock stood still or went back. A peer ignores a proposal not
        newer than the last it applied for that rule (`receive_proposal`), so a revoke
        and the share after it must never share a stamp or go backwards."""
        stamp = max(hlc, self._counter(txn, _STAMP_COUNTER) + 1)
        self._set_counter(txn, _STAMP_COUNTER, stamp)
        return stamp

    def _queue(self, txn: Txn, proposal: Proposal) -> None:
        """Append to the peer's outbox under a number never used for it before: the
        counter survives the outbox draining (an old acknowledgement "up to n" can never
        delete a newer entry). Outboxes written before the counter existed are honoured
        by starting above their last entry."""
        prefix = proposal.peer.encode() + SEP
        counter = _OUTBOX_COUNTER + proposal.peer.encode()
        last = self._counter(txn, counter)
        for key, _ in scan_prefix(txn, self.dbs[PROPOSAL_OUTBOX_DB], prefix):
            last = max(last, U64.unpack(key[len(prefix):])[0])
        self._set_counter(txn, counter, last + 1)
        txn.put(prefix + U64.pack(last + 1), proposal.encode(),
                db=self.dbs[PROPOSAL_OUTBOX_DB])

    def _propose(self, txn: Txn, rule: ShareRule, peer: PeerInfo, hlc: int,
                 stamp: int, completed: list[Agreement]) -> Agreement:
        proposal = Proposal.create(self.key, ProposalKind.SHARE, peer.peer_id, rule, stamp)
        self._queue(txn, proposal)
        before = self._agreement(txn, peer.peer_id, rule.domain)
        after = before.with_event("shared", hlc,
                                  our_shares=with_share(before.our_shares, proposal.encode()),
                                  revoked=False)
        self._put_agreement(txn, after)
        if after.state is AgreementState.EFFECTIVE and before.flows != after.flows:
            completed.append(after)
        return after

    # -- writing ------------------------------------------------------------------------
    def share(self, rule: ShareRule, *, ledger: LedgerSink | None = None,
              hlc: int | None = None) -> list[Agreement]:
        """Add (or replace) a rule. An allow rule is proposed, signed, to every known peer
        it matches (queued in the outbox); returns the agreements it touched."""
        hlc = hlc_now() if hlc is None else hlc
        completed: list[Agreement] = []

        def run(txn: Txn) -> list[Agreement]:
            completed.clear()
            new = txn.get(rule.rule_id.encode(), db=self.dbs[RULES_DB]) is None
            if new and txn.stat(self.dbs[RULES_DB])["entries"] >= MAX_RULES:
                raise ValidationError("rules", f"this node already has {MAX_RULES} rules")
            txn.put(rule.rule_id.encode(), canonical.encode(rule.to_plain()),
                    db=self.dbs[RULES_DB])
            touched = []
            if rule.effect is Effect.ALLOW:
                stamp = self._stamp(txn, hlc)
                for peer in self._peers_matching(txn, rule.subject):
                    touched.append(self._propose(txn, rule, peer, hlc, stamp, completed))
            self.audit.append_in(txn, AuditKind.POLICY, rule=rule.rule_id,
                                 detail={"action": "share", "rule": rule.describe(),
                                         "peers": len(touched)})
            for agreement in completed:
                self.audit.append_in(txn, AuditKind.AGREEMENT, peer=agreement.peer,
                                     rule=rule.rule_id,
                                     detail={"event": "effective", "domain": agreement.domain})
            return touched

        touched = self.cortex.write(run)
        self._record_agreements(completed, ledger, hlc)
        return touched

    def revoke(self, subject: Subject, domain: str, *, direction: Direction | None = None,
               effect: Effect = Effect.ALLOW, ledger: LedgerSink | None = None,
               hlc: int | None = None) -> list[ShareRule]:
        """Remove our rules of `effect` for (subject, domain[, direction]). Removing an
        allow stops sharing at once (the next batch is filtered by the new policy), tells
        every peer it was proposed to (a signed revoke in the outbox, whatever other rules
        of ours still match that peer) and is recorded on the ledger. Returns the removed
        rules (empty if none matched: nothing changes)."""
        hlc = hlc_now() if hlc is None else hlc
        notified: list[tuple[ShareRule, str]] = []

        def run(txn: Txn) -> list[ShareRule]:
            notified.clear()
            removed = []
            for key, raw in list(scan_prefix(txn, self.dbs[RULES_DB])):
                rule = ShareRule.from_plain(canonical.decode(raw))
                if (rule.subject == subject and rule.domain == domain
                        and rule.effect is effect
                        and (direction is None or rule.direction is direction)):
                    txn.delete(key, db=self.dbs[RULES_DB])
                    removed.append(rule)
            allows = [r for r in removed if r.effect is Effect.ALLOW]
            stamp = self._stamp(txn, hlc) if allows else 0
            for rule in removed:
                self.audit.append_in(txn, AuditKind.POLICY, rule=rule.rule_id,
                                     detail={"action": "revoke", "rule": rule.describe()})
            for rule in allows:
                for _, raw in list(scan_prefix(txn, self.dbs[AGREEMENTS_DB])):
                    agreement = Agreement.from_plain(canonical.decode(raw))
                    if agreement.domain != rule.domain or rule.rule_id not in {
                            r.rule_id for r in agreement.our_rules}:
                        continue
                    self._queue(txn, Proposal.create(self.key, ProposalKind.REVOKE,
                                                     agreement.peer, rule, stamp))
                    self._put_agreement(txn, agreement.with_event(
                        "revoked by us", hlc, revoked=True,
                        our_shares=without_rule(agreement.our_shares, rule.rule_id)))
                    self.audit.append_in(txn, AuditKind.AGREEMENT, peer=agreement.peer,
                                         rule=rule.rule_id,
                                         detail={"event": "revoked", "domain": domain})
                    notified.append((rule, agreement.peer))
            return removed

        removed = self.cortex.write(run)
        if ledger is not None:
            for rule in removed:
                if rule.effect is not Effect.ALLOW:
                    continue
                peers = sorted(p for r, p in notified if r == rule)
                ledger.append("revocation", canonical.sha256(canonical.encode(
                    [rule.to_plain(), peers, hlc])),
                    {"action": "revoke_share", "domain": rule.domain,
                     "subject": str(rule.subject)[:256], "peers": len(peers), "hlc": hlc},
                    idempotency_key("revoke", self.me.peer_id, rule.rule_id, hlc))
        return removed

    def set_residency(self, rule: ResidencyRule, *, remove: bool = False) -> bool:
        """Add or remove a residency rule; True if the policy changed."""

        def run(txn: Txn) -> bool:
            key = rule.rule_id.encode()
            present = txn.get(key, db=self.dbs[RESIDENCY_DB]) is not None
            if remove == (not present):
                return False
            if remove:
                txn.delete(key, db=self.dbs[RESIDENCY_DB])
            else:
                txn.put(key, canonical.encode(rule.to_plain()), db=self.dbs[RESIDENCY_DB])
            self.audit.append_in(txn, AuditKind.POLICY, rule=rule.rule_id, detail={
                "action": "residency_removed" if remove else "residency",
                "rule": rule.describe()})
            return True

        return self.cortex.write(run)

    def set_peer(self, info: PeerInfo, *, hlc: int | None = None) -> int:
        """Record a peer's org and region as certified in its handshake (empty when an org
        key we trust did not certify them: then only peer-id rules match). Each of our allow
        rules that now matches it and is not in force with it as it stands is proposed
        (outbox); returns how many."""
        hlc = hlc_now() if hlc is None else hlc
        completed: list[Agreement] = []

        def run(txn: Txn) -> int:
            completed.clear()
            txn.put(info.peer_id.encode(), canonical.encode(info.to_plain()),
                    db=self.dbs[PEERS_DB])
            proposed = 0
            stamp = 0
            for _, raw in list(scan_prefix(txn, self.dbs[RULES_DB])):
                rule = ShareRule.from_plain(canonical.decode(raw))
                if rule.effect is not Effect.ALLOW or not rule.subject.matches(info):
                    continue
                # Only a rule not in force with this peer as it stands now: `share`
                # itself proposes a new or changed rule to the peers it matches then,
                # and a handshake must not re-propose every time. Each rule counts on
                # its own: another rule of ours for the same domain says nothing of it.
                if rule in self._agreement(txn, info.peer_id, rule.domain).our_rules:
                    continue
                stamp = stamp or self._stamp(txn, hlc)
                self._propose(txn, rule, info, hlc, stamp, completed)
                proposed += 1
            return proposed

        return self.cortex.write(run)

    def receive_proposal(self, data: bytes, sender: str, *, ledger: LedgerSink | None = None,
                         hlc: int | None = None) -> ProposalOutcome:
        """Apply a peer's signed share or revoke. `ProposalError` (the peer's fault,
        nothing stored) when it is malformed, badly signed, not from `sender` or not
        addressed to us. A proposal whose stamp is not above the last one applied for
        the same (sender, rule id) changes nothing and comes back `stale`: deliveries
        are retried and may be duplicated or reordered, and a late share must not undo
        the revoke that followed it."""
        hlc = hlc_now() if hlc is None else hlc
        proposal = Proposal.decode(data)
        if proposal.proposer != sender:
            raise ProposalError(f"proposal signed by {proposal.proposer} arrived from {sender}")
        if proposal.peer != self.me.peer_id:
            raise ProposalError(f"proposal addressed to {proposal.peer}, not to us")
        rule = proposal.rule
        if not rule.subject.matches(self.me):
            raise ProposalError(f"proposal rule is about {rule.subject}, which is not us")
        remote_key = join_key(sender, rule.rule_id)

        changed: list[bool] = []
        stale: list[bool] = []

        def run(txn: Txn) -> Agreement:
            changed.clear()
            stale.clear()
            before = self._agreement(txn, sender, rule.domain)
            if proposal.hlc <= self._applied_mark(txn, remote_key):
                stale.append(True)  # a duplicate, or overtaken by a newer one: no change
                return before
            self._make_room(txn, sender, remote_key, hlc)  # node/store/proposal_bounds.py
            txn.put(remote_key, U64.pack(proposal.hlc), db=self.dbs[MARKS_DB])
            if proposal.kind is ProposalKind.SHARE:
                txn.put(remote_key, data, db=self.dbs[REMOTE_DB])
                after = before.with_event("shared by them", hlc, revoked=False,
                                          their_shares=with_share(before.their_shares, data))
            else:
                txn.delete(remote_key, db=self.dbs[REMOTE_DB])
                after = before.with_event(
                    "revoked by them", hlc, revoked=True,
                    their_shares=without_rule(before.their_shares, rule.rule_id))
            self._put_agreement(txn, after)
            changed.append(bool(after.flows) and before.flows != after.flows)
            event = "effective" if changed[0] else f"{proposal.kind}_received"
            self.audit.append_in(txn, AuditKind.AGREEMENT, peer=sender, rule=rule.rule_id,
                                 version_hash=canonical.sha256(data),
                                 detail={"event": event, "domain": rule.domain})
            return after

        agreement = self.cortex.write(run)
        if stale:
            return ProposalOutcome(proposal, agreement, stale=True)
        if changed[0]:
            self._record_agreements([agreement], ledger, hlc)
        return ProposalOutcome(proposal, agreement,
                               rule.domain if proposal.kind is ProposalKind.REVOKE else None)

    def _make_room(self, txn: Txn, sender: str, remote_key: bytes, hlc: int) -> None:
        """ProposalLimit unless a new rule from `sender` fits the bounds; when all peers
        together are at the limit, first forget peers idle without an agreement."""
        prefix = sender.encode() + SEP
        try:
            check_room(txn, self.dbs[MARKS_DB], prefix, remote_key)
        except ProposalLimit:
            if self.expire_unagreed(unpack_hlc(hlc)[0], txn=txn) == 0:
                raise
            check_room(txn, self.dbs[MARKS_DB], prefix, remote_key)

    def expire_unagreed(self, now_ms: int, *, txn: Txn | None = None) -> int:
        """Forget what peers without any agreement in force proposed, once their last
        proposal is UNAGREED_TTL_MS old (our own shares to them stay); returns how many
        peers were forgotten."""
        def run(txn: Txn) -> int:
            rows = [Agreement.from_plain(canonical.decode(v))
                    for _, v in scan_prefix(txn, self.dbs[AGREEMENTS_DB])]
            idle = idle_unagreed(rows, now_ms)
            for peer in idle:
                prefix = peer.encode() + SEP
                for db in (REMOTE_DB, MARKS_DB):
                    for key, _ in list(scan_prefix(txn, self.dbs[db], prefix)):
                        txn.delete(key, db=self.dbs[db])
            for row in rows:
                if row.peer not in idle:
                    continue
                if row.our_shares:
                    self._put_agreement(txn, row.with_event("their proposals expired",
                                                            row.events[-1][1] if row.events
                                                            else 0, their_shares=()))
                else:
                    txn.delete(join_key(row.peer, row.domain), db=self.dbs[AGREEMENTS_DB])
            return len(idle)

        return run(txn) if txn is not None else self.cortex.write(run)

    def _applied_mark(self, txn: Txn, remote_key: bytes) -> int:
        """The stamp of the newest proposal applied for (sender, rule id); 0 if none.
        A share in force stored before marks were kept counts as applied."""
        raw = txn.get(remote_key, db=self.dbs[MARKS_DB])
        if raw is not None:
            return U64.unpack(raw)[0]
        held = txn.get(remote_key, db=self.dbs[REMOTE_DB])
        return Proposal.decode(bytes(held)).hlc if held is not None else 0

    def agreement(self, peer: str, domain: str) -> Agreement:
        with self.cortex.env.begin() as txn:
            return self._agreement(txn, peer, domain)

    def _record_agreements(self, agreements: Iterable[Agreement], ledger: LedgerSink | None,
                           hlc: int) -> None:
        if ledger is None:
            return
        for agreement in agreements:
            payload = canonical.sha256(canonical.encode(
                [list(agreement.our_shares), list(agreement.their_shares)]))
            ledger.append("agreement", payload, {
                "action": "agreement", "peer": agreement.peer, "domain": agreement.domain,
                "flows": ",".join(agreement.flows), "hlc": hlc},
                idempotency_key("agreement", payload))


def rule_from_options(target: str, domain: str, *, direction: str = "both",
                      anonymize: bool = False, allow_forward: bool = False,
                      deny: bool = False) -> ShareRule:
    """The rule a `share` command line means (`ValidationError` names the bad option)."""
    return ShareRule(Subject.parse(target), domain, Direction(direction),
                     Effect.DENY if deny else Effect.ALLOW, anonymize, allow_forward)
