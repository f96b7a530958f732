"""Bounds on the share proposals a peer can make us store (issue 11, item 6).

Any handshaken peer can send signed share proposals addressed to us; each distinct rule
id used to add a row (the proposal, its stamp mark, an agreement row, an audit record),
with no limit: 21,764 proposals in 26 s took `policies()` from 0.7 ms to 2.2 s and the
Cortex from 188 KB to 117 MB. Like go-libp2p's resource manager, every such row now
counts against a per-peer and a total limit, a peer past its limit is refused (not
served slowly) and dropped, and what never became an agreement expires.

The unit counted is a stamp mark (`sov_marks`, one per sender and rule id): every applied
proposal, share or revoke, writes one, and a share in force always has one, so bounding
marks bounds shares, agreement rows and audit records from proposals too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from gd.crdt.hlc import unpack
from gd.node.store.lmdb_tables import Txn
from gd.protocol.errors import LimitExceeded
from gd.protocol.sovereignty_agreements import ProposalError

# An honest partner shares a handful of domains, each perhaps under a peer, an org and a
# region rule, and revokes and re-shares now and then: 64 distinct rules is ample.
MAX_RULES_PER_PEER: Final = 64
# All peers together: about 64 partners at their per-peer limit. At <= 4 KiB a proposal
# that is <= 16 MiB and keeps `policies()` (which decodes every remote share) in the
# millisecond range. Beyond it no new rule is taken from anyone until some expire.
MAX_RULES_TOTAL: Final = 4096
# A peer's rows that never became an agreement in force (no flow either way) are
# forgotten this long after its last proposal: fresh keys cannot fill the total for good,
# and an honest partner whose proposal we have not answered in a week re-proposes on its
# next handshake anyway.
UNAGREED_TTL_MS: Final = 7 * 24 * 3600 * 1000


class ProposalLimit(ProposalError, LimitExceeded):
    """The sender is past a bound on what it may make us store: refused, and the peer is
    dropped (it is a `LimitExceeded` for the stream guard)."""


def _count_prefix(txn: Txn, db: Any, prefix: bytes, stop_at: int) -> int:
    cur = txn.cursor(db=db)
    n = 0
    if not cur.set_range(prefix):
        return 0
    for key in cur.iternext(keys=True, values=False):
        if not key.startswith(prefix) or n >= stop_at:
            break
        n += 1
    return n


def check_room(txn: Txn, marks_db: Any, sender_prefix: bytes, remote_key: bytes) -> None:
    """Raise ProposalLimit if storing a first proposal for `remote_key` would pass a bound.
    A rule the sender already has a mark for replaces in place and always fits."""
    if txn.get(remote_key, db=marks_db) is not None:
        return
    held = _count_prefix(txn, marks_db, sender_prefix, MAX_RULES_PER_PEER)
    if held >= MAX_RULES_PER_PEER:
        raise ProposalLimit(f"more than {MAX_RULES_PER_PEER} share rules from one peer")
    if txn.stat(marks_db)["entries"] >= MAX_RULES_TOTAL:
        raise ProposalLimit(f"more than {MAX_RULES_TOTAL} share rules from all peers")


def idle_unagreed(agreements: Iterable[Any], now_ms: int) -> set[str]:
    """Peers none of whose agreements flows and whose newest event is over the TTL old.

    `agreements` are `policy_store.Agreement`s; a peer with any flowing agreement, or with
    an event inside the TTL, is kept whole."""
    newest: dict[str, int] = {}
    flowing: set[str] = set()
    for agreement in agreements:
        if agreement.flows:
            flowing.add(agreement.peer)
        last = max((hlc for _, hlc in agreement.events), default=0)
        newest[agreement.peer] = max(newest.get(agreement.peer, 0), last)
    return {peer for peer, last in newest.items()
            if peer not in flowing and now_ms - unpack(last)[0] >= UNAGREED_TTL_MS}

