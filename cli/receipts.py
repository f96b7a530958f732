"""What a command says about the ledger entries it recorded.

A command that changes something records it on the region's ledger through
`gd.node.services.recorder.LedgerRecorder`. The answer is either on the ledger (an index) or
`Queued`: written down here and proposed later, because no daemon runs or because the
region has no quorum. A person must be told which, in one line, and never see the second
as a failure: the change is made and its entry commits by itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gd.node.control_methods.ops import receipt_json
from gd.node.services.recorder import NO_LEADER_REASON

__all__ = ["ledger_note", "receipt_json"]


def ledger_note(receipts: Sequence[Mapping[str, Any]]) -> str:
    """'' when every entry is on the ledger; otherwise why the entry waits and until
    when ("the ledger entry is queued until the region has a quorum (ledger leader
    unknown)"). `receipts` as `receipt_json` gives them, from this process or the
    daemon."""
    queued = [r for r in receipts if r.get("status") == "queued"]
    if not queued:
        return ""
    what = "the ledger entry is" if len(receipts) == 1 else \
        f"{len(queued)} of {len(receipts)} ledger entries are"
    if any(q.get("reason") == NO_LEADER_REASON for q in queued):
        return f"{what} queued until the region has a quorum ({NO_LEADER_REASON})"
    return f"{what} queued until the daemon runs (it proposes them when it starts)"
