"""Share rules, agreements and the peer directory, persisted in the Cortex.

Sub-databases (keys are ASCII joined by NUL, values canonical msgpack):

    sov_rules       rule_id -> ShareRule           our share rules
    sov_residency   rule_id -> ResidencyRule        our residency rules
    sov_remote      peer NUL rule_id -> Proposal    peers' in-force shares addressed to us
    sov_agreements  peer NUL domain -> Agreement    both halves and the state
    sov_peers       peer -> PeerInfo                what we know of each peer (org, region)
    sov_outbox      peer NUL seq -> Proposal        signed proposals still to deliver

Every operation (a share, a revoke, a received proposal, a new peer) is ONE write
transaction together with its audit record, so a crash leaves the policy and its
audit trail agreeing. Ledger records are appended after the commit: the ledger may
live in the same LMDB environment, where a nested write transaction would deadlock,
and the ledger's idempotency keys make a retried record harmless.

Agreements follow Syncthing's mutual consent: our signed share is the proposal, the
peer's matching share the acceptance (either may come first). The daemon delivers the
outbox over the sync protocol and calls `receive_proposal` with what peers send.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import lmdb

from gd.genome import canonical
from gd.genome.errors import ValidationError
from gd.genome.identity import NodeKey
from gd.node.audit import AuditKind, AuditLog, LedgerSink, idempotency_key
from gd.node.cortex import Cortex
from gd.node.importer import hlc_now
from gd.protocol.sovereignty import (
    MAX_RULES,
    Direction,
    Effect,
    PeerInfo,
    PolicySet,
    Proposal,
    ProposalError,
    ProposalKind,
    ResidencyRule,
    ShareRule,
    Subject,
)

RULES_DB: Final = "sov_rules"
RESIDENCY_DB: Final = "sov_residency"
REMOTE_DB: Final = "sov_remote"
AGREEMENTS_DB: Final = "sov_agreements"
PEERS_DB: Final = "sov_peers"
OUTBOX_DB: Final = "sov_outbox"
# An agreement keeps its last events for `agreements list`; older ones stay in the audit
# log, which is the full history.
MAX_AGREEMENT_EVENTS: Final = 32
SEP: Final = b"\x00"
_U64 = struct.Struct(">Q")


class AgreementState(enum.StrEnum):
    PROPOSED = "proposed"
    EFFECTIVE = "effective"
    REVOKED = "revoked"


@dataclass(frozen=True)
class Agreement:
    """Both halves of the agreement between us and `peer` on `domain` (or ``*``)."""

    peer: str
    domain: str
    ours: bytes | None = None  # our signed share (Proposal bytes), if in force
    theirs: bytes | None = None  # the peer's signed share, if in force
    revoked: bool = False  # a side revoked since the last share
    events: tuple[tuple[str, int], ...] = ()  # (event, hlc), newest last

    @property
    def our_rule(self) -> ShareRule | None:
        return Proposal.decode(self.ours).rule if self.ours else None

    @property
    def their_rule(self) -> ShareRule | None:
        return Proposal.decode(self.theirs).rule if self.theirs else None

    @property
    def flows(self) -> tuple[str, ...]:
        """Which directions both sides agreed to: "out" (we send) and/or "in"."""
        ours, theirs = self.our_rule, self.their_rule
        if ours is None or theirs is None:
            return ()
        out = []
        if ours.direction.covers(Direction.SEND) and theirs.direction.covers(Direction.RECEIVE):
            out.append("out")
        if ours.direction.covers(Direction.RECEIVE) and theirs.direction.covers(Direction.SEND):
            out.append("in")
        return tuple(out)

    @property
    def state(self) -> AgreementState:
        if self.flows:
            return AgreementState.EFFECTIVE
        if self.revoked:
            return AgreementState.REVOKED
        return AgreementState.PROPOSED

    def with_event(self, event: str, hlc: int, **changes: Any) -> Agreement:
        events = (*self.events, (event, hlc))[-MAX_AGREEMENT_EVENTS:]
        fields = {"ours": self.ours, "theirs": self.theirs, "revoked": self.revoked}
        fields.update(changes)
        return Agreement(self.peer, self.domain, events=events, **fields)

    def to_plain(self) -> dict[str, Any]:
        return {"domain": self.domain, "events": [list(e) for e in self.events],
                "ours": self.ours, "peer": self.peer, "revoked": self.revoked,
                "theirs": self.theirs}

    @classmethod
    def from_plain(cls, data: Any) -> Agreement:
        return cls(data["peer"], data["domain"], data["ours"], data["theirs"],
                   data["revoked"], tuple((e, h) for e, h in data["events"]))

    def to_json(self) -> dict[str, Any]:
        ours, theirs = self.our_rule, self.their_rule
        return {"peer": self.peer, "domain": self.domain, "state": str(self.state),
                "flows": list(self.flows),
                "ours": ours.describe() if ours else None,
                "theirs": theirs.describe() if theirs else None,
                "events": [{"event": e, "hlc": h} for e, h in self.events]}


@dataclass(frozen=True)
class ProposalOutcome:
    """What a received proposal changed (the daemon acts on `revoked_domain`)."""

    proposal: Proposal
    agreement: Agreement
    revoked_domain: str | None = None  # set when the peer revoked a share to us


def _k(*parts: str) -> bytes:
    return SEP.join(p.encode() for p in parts)


def _scan(txn: lmdb.Transaction, db: Any, prefix: bytes = b"") -> Iterable[tuple[bytes, bytes]]:
    cur = txn.cursor(db=db)
    if not cur.set_range(prefix):
        return
    for key, value in cur:
        if not key.startswith(prefix):
            return
        yield key, value


class PolicyStore:
    """This node's sovereignty state in its Cortex. `me` is its own peer info."""

    def __init__(self, cortex: Cortex, key: NodeKey, *, org: str, region: str,
                 audit: AuditLog | None = None) -> None:
        self.cortex = cortex
        self.key = key
        self.me = PeerInfo(key.peer_id, org, region)
        self.audit = audit if audit is not None else AuditLog(cortex)
        self.dbs = {name: cortex.open_db(name) for name in (
            RULES_DB, RESIDENCY_DB, REMOTE_DB, AGREEMENTS_DB, PEERS_DB, OUTBOX_DB)}

    # -- reading ------------------------------------------------------------------------
    def rules(self) -> list[ShareRule]:
        with self.cortex.env.begin() as txn:
            return [ShareRule.from_plain(canonical.decode(v))
                    for _, v in _scan(txn, self.dbs[RULES_DB])]

    def residency_rules(self) -> list[ResidencyRule]:
        with self.cortex.env.begin() as txn:
            return [ResidencyRule.from_plain(canonical.decode(v))
                    for _, v in _scan(txn, self.dbs[RESIDENCY_DB])]

    def remote_rules(self) -> dict[str, tuple[ShareRule, ...]]:
        out: dict[str, list[ShareRule]] = {}
        with self.cortex.env.begin() as txn:
            for key, raw in _scan(txn, self.dbs[REMOTE_DB]):
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
                    for _, v in _scan(txn, self.dbs[AGREEMENTS_DB])]

    def peer(self, peer_id: str) -> PeerInfo | None:
        with self.cortex.env.begin() as txn:
            raw = txn.get(peer_id.encode(), db=self.dbs[PEERS_DB])
        return PeerInfo.from_plain(canonical.decode(raw)) if raw else None

    def peers(self) -> list[PeerInfo]:
        with self.cortex.env.begin() as txn:
            return [PeerInfo.from_plain(canonical.decode(v))
                    for _, v in _scan(txn, self.dbs[PEERS_DB])]

    def outbox(self, peer_id: str) -> list[tuple[int, bytes]]:
        """Signed proposals waiting for delivery to `peer_id`: (seq, bytes), oldest first."""
        prefix = peer_id.encode() + SEP
        with self.cortex.env.begin() as txn:
            return [(_U64.unpack(k[len(prefix):])[0], v)
                    for k, v in _scan(txn, self.dbs[OUTBOX_DB], prefix)]

    def delivered(self, peer_id: str, upto: int) -> None:
        """Drop `peer_id`'s outbox entries up to `upto` (the peer acknowledged them)."""
        prefix = peer_id.encode() + SEP

        def run(txn: lmdb.Transaction) -> None:
            for key, _ in list(_scan(txn, self.dbs[OUTBOX_DB], prefix)):
                if _U64.unpack(key[len(prefix):])[0] <= upto:
                    txn.delete(key, db=self.dbs[OUTBOX_DB])

        self.cortex.write(run)

    # -- internals (all inside one write transaction) -----------------------------------
    def _peers_matching(self, txn: lmdb.Transaction, subject: Subject) -> list[PeerInfo]:
        known = [PeerInfo.from_plain(canonical.decode(v))
                 for _, v in _scan(txn, self.dbs[PEERS_DB])]
        found = [p for p in known if subject.matches(p)]
        if subject.kind == "peer" and not found:
            found = [PeerInfo(subject.value)]
        return [p for p in found if p.peer_id != self.me.peer_id]

    def _agreement(self, txn: lmdb.Transaction, peer: str, domain: str) -> Agreement:
        raw = txn.get(_k(peer, domain), db=self.dbs[AGREEMENTS_DB])
        return Agreement.from_plain(canonical.decode(raw)) if raw else Agreement(peer, domain)

    def _put_agreement(self, txn: lmdb.Transaction, agreement: Agreement) -> None:
        txn.put(_k(agreement.peer, agreement.domain), canonical.encode(agreement.to_plain()),
                db=self.dbs[AGREEMENTS_DB])

    def _queue(self, txn: lmdb.Transaction, proposal: Proposal) -> None:
        prefix = proposal.peer.encode() + SEP
        last = 0
        for key, _ in _scan(txn, self.dbs[OUTBOX_DB], prefix):
            last = _U64.unpack(key[len(prefix):])[0]
        txn.put(prefix + _U64.pack(last + 1), proposal.encode(), db=self.dbs[OUTBOX_DB])

    def _propose(self, txn: lmdb.Transaction, rule: ShareRule, peer: PeerInfo, hlc: int,
                 completed: list[Agreement]) -> Agreement:
        proposal = Proposal.create(self.key, ProposalKind.SHARE, peer.peer_id, rule, hlc)
        self._queue(txn, proposal)
        before = self._agreement(txn, peer.peer_id, rule.domain)
        after = before.with_event("shared", hlc, ours=proposal.encode(), revoked=False)
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

        def run(txn: lmdb.Transaction) -> list[Agreement]:
            completed.clear()
            new = txn.get(rule.rule_id.encode(), db=self.dbs[RULES_DB]) is None
            if new and txn.stat(self.dbs[RULES_DB])["entries"] >= MAX_RULES:
                raise ValidationError("rules", f"this node already has {MAX_RULES} rules")
            txn.put(rule.rule_id.encode(), canonical.encode(rule.to_plain()),
                    db=self.dbs[RULES_DB])
            touched = []
            if rule.effect is Effect.ALLOW:
                for peer in self._peers_matching(txn, rule.subject):
                    touched.append(self._propose(txn, rule, peer, hlc, completed))
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
        each peer that held it (a signed revoke in the outbox) and is recorded on the
        ledger. Returns the removed rules (empty if none matched: nothing changes)."""
        hlc = hlc_now() if hlc is None else hlc
        notified: list[tuple[ShareRule, str]] = []

        def run(txn: lmdb.Transaction) -> list[ShareRule]:
            notified.clear()
            removed = []
            for key, raw in list(_scan(txn, self.dbs[RULES_DB])):
                rule = ShareRule.from_plain(canonical.decode(raw))
                if (rule.subject == subject and rule.domain == domain
                        and rule.effect is effect
                        and (direction is None or rule.direction is direction)):
                    txn.delete(key, db=self.dbs[RULES_DB])
                    removed.append(rule)
            for rule in removed:
                self.audit.append_in(txn, AuditKind.POLICY, rule=rule.rule_id,
                                     detail={"action": "revoke", "rule": rule.describe()})
                if rule.effect is not Effect.ALLOW:
                    continue
                for _, raw in list(_scan(txn, self.dbs[AGREEMENTS_DB])):
                    agreement = Agreement.from_plain(canonical.decode(raw))
                    ours = agreement.our_rule
                    if ours is None or ours.rule_id != rule.rule_id:
                        continue
                    self._queue(txn, Proposal.create(self.key, ProposalKind.REVOKE,
                                                     agreement.peer, rule, hlc))
                    self._put_agreement(txn, agreement.with_event("revoked by us", hlc,
                                                                  ours=None, revoked=True))
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

        def run(txn: lmdb.Transaction) -> bool:
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
        """Record a peer's (signed, handshake-verified) org and region. Our allow rules
        that now match it and were never proposed to it are proposed (outbox); returns
        how many."""
        hlc = hlc_now() if hlc is None else hlc
        completed: list[Agreement] = []

        def run(txn: lmdb.Transaction) -> int:
            completed.clear()
            txn.put(info.peer_id.encode(), canonical.encode(info.to_plain()),
                    db=self.dbs[PEERS_DB])
            proposed = 0
            for _, raw in list(_scan(txn, self.dbs[RULES_DB])):
                rule = ShareRule.from_plain(canonical.decode(raw))
                if rule.effect is not Effect.ALLOW or not rule.subject.matches(info):
                    continue
                # Only where nothing of ours is in force yet: `share` itself proposes a
                # new or changed rule, and a handshake must not re-propose every time.
                if self._agreement(txn, info.peer_id, rule.domain).ours is None:
                    self._propose(txn, rule, info, hlc, completed)
                    proposed += 1
            return proposed

        return self.cortex.write(run)

    def receive_proposal(self, data: bytes, sender: str, *, ledger: LedgerSink | None = None,
                         hlc: int | None = None) -> ProposalOutcome:
        """Apply a peer's signed share or revoke. `ProposalError` (the peer's fault,
        nothing stored) when it is malformed, badly signed, not from `sender` or not
        addressed to us."""
        hlc = hlc_now() if hlc is None else hlc
        proposal = Proposal.decode(data)
        if proposal.proposer != sender:
            raise ProposalError(f"proposal signed by {proposal.proposer} arrived from {sender}")
        if proposal.peer != self.me.peer_id:
            raise ProposalError(f"proposal addressed to {proposal.peer}, not to us")
        rule = proposal.rule
        if not rule.subject.matches(self.me):
            raise ProposalError(f"proposal rule is about {rule.subject}, which is not us")
        remote_key = _k(sender, rule.rule_id)

        changed: list[bool] = []

        def run(txn: lmdb.Transaction) -> Agreement:
            changed.clear()
            before = self._agreement(txn, sender, rule.domain)
            if proposal.kind is ProposalKind.SHARE:
                txn.put(remote_key, data, db=self.dbs[REMOTE_DB])
                after = before.with_event("shared by them", hlc, theirs=data, revoked=False)
            else:
                txn.delete(remote_key, db=self.dbs[REMOTE_DB])
                theirs = None if before.their_rule is not None and \
                    before.their_rule.rule_id == rule.rule_id else before.theirs
                after = before.with_event("revoked by them", hlc, theirs=theirs, revoked=True)
            self._put_agreement(txn, after)
            changed.append(bool(after.flows) and before.flows != after.flows)
            event = "effective" if changed[0] else f"{proposal.kind}_received"
            self.audit.append_in(txn, AuditKind.AGREEMENT, peer=sender, rule=rule.rule_id,
                                 version_hash=canonical.sha256(data),
                                 detail={"event": event, "domain": rule.domain})
            return after

        agreement = self.cortex.write(run)
        if changed[0]:
            self._record_agreements([agreement], ledger, hlc)
        return ProposalOutcome(proposal, agreement,
                               rule.domain if proposal.kind is ProposalKind.REVOKE else None)

    def agreement(self, peer: str, domain: str) -> Agreement:
        with self.cortex.env.begin() as txn:
            return self._agreement(txn, peer, domain)

    def _record_agreements(self, agreements: Iterable[Agreement], ledger: LedgerSink | None,
                           hlc: int) -> None:
        if ledger is None:
            return
        for agreement in agreements:
            payload = canonical.sha256(canonical.encode([agreement.ours, agreement.theirs]))
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
