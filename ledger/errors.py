"""The ledger's errors, split by whose fault they are (as h11 does).

* `LocalLedgerError`: we asked for something impossible (an index past the end, a proof
  between sizes we do not hold, a write on a read-only ledger). Fix the caller.
* `RemoteLedgerError`: bytes or claims from outside do not hold up (an entry that does
  not decode, a signature that does not verify, a proof that does not reach its root).
  The peer (or the disk) is at fault; the process carries on and reports it.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every ledger error."""


class LocalLedgerError(LedgerError):
    """The caller misused the ledger (bad index, bad size, read-only store)."""


class RemoteLedgerError(LedgerError):
    """Untrusted input failed a check: malformed entry or head, bad signature, bad proof."""


class ProofError(RemoteLedgerError):
    """A Merkle inclusion or consistency proof did not verify."""
