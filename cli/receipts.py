"""What a command says about the ledger entries it recorded.

A command that changes something records it on the region's ledger through
`gd.node.services.recorder.LedgerRecorder`. The answer is either on the ledger (an index) or
`Queued`: written down here and proposed later, because no daemon runs or because the
region has no quorum. A person must be told which, in one line, and never see the second
as a failure: the change is made and its entry commits by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gd.ledger.chain import AppendReceipt
from gd.node.services.recorder import NO_LEADER_REASON, Queued, Receipt


def receipt_json(receipt: Receipt) -> dict[str, Any]:
    """A receipt for --json: status, and the index (committed) or the reason (queued)."""
    if isinstance(receipt, Queued):
        return receipt.to_json()
    assert isinstance(receipt, AppendReceipt)
    return {"status": receipt.status.value, "index": receipt.index,
            "entry_hash": receipt.entry_hash.hex(), "author": receipt.author,
            "idempotency_key": receipt.idempotency_key}


def ledger_note(receipts: Sequence[Receipt]) -> str:
    """'' when every entry is on the ledger; otherwise why the entry waits and until
    when ("the ledger entry is queued until the region has a quorum (ledger leader
    unknown)")."""
    queued = [r for r in receipts if isinstance(r, Queued)]
    if not queued:
        return ""
    what = "the ledger entry is" if len(receipts) == 1 else \
        f"{len(queued)} of {len(receipts)} ledger entries are"
    if any(q.reason == NO_LEADER_REASON for q in queued):
        return f"{what} queued until the region has a quorum ({NO_LEADER_REASON})"
    return f"{what} queued until the daemon runs (it proposes them when it starts)"
