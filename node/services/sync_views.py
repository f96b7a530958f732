"""Per-peer views: where sovereignty plugs into sync (issue 7), and the plain policies
tests and benchmarks pass in-process.

Every conversation with a peer goes through a per-peer *view*. The sender side serves a
receiver through a `SenderView` (its feed reader, which entries may go, and in which
form: the sovereignty filter may send a derived, anonymised gene), used for the feed,
for reconciliation items (so unauthorised ids never appear, even inside a fingerprint)
and for repair fetches; the receiver side takes genes through a `ReceiverView`. Each
view hears `finish_batch()` after a batch went out or was applied, which is where the
audit log is written. Default deny: without sovereignty's views nothing is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from gd.genome.gene import Gene
from gd.protocol.sync import FeedReader, RejectedGene, SharePolicy

# (sender peer id, gene) -> do we take this gene from this sender?
AcceptPolicy = Callable[[str, Gene], bool]


def share_all(receiver: str, gene: Gene) -> bool:
    """Allow-all policy: only for tests and benchmarks, passed in-process by constructor
    (there is deliberately no config key for it: a config file must never switch
    sovereignty off in the real binary)."""
    return True


def accept_all(sender: str, gene: Gene) -> bool:
    return True


class SenderView(Protocol):
    """How we serve one receiver, for the life of one conversation (a pull, a reconcile).

    `read_feed` and `policy` feed `SyncSender` (the view may yield a different form of a
    stored gene, and `policy` approves exactly the forms it cleared); `outgoing(gene)` is
    the form of a stored head the receiver may have, or None (reconciliation items and
    repair fetches). `finish_batch(extra)` is called once a batch is final, just before
    it is sent (a crash after the send must not lose its audit records), with the
    fetched genes it carried beyond the feed's; it returns how many genes it holds."""

    def read_feed(self, since: int, limit: int) -> Iterable[tuple[int, Gene | None]]: ...

    def policy(self, receiver: str, gene: Gene) -> bool: ...

    def outgoing(self, gene: Gene) -> Gene | None: ...

    def finish_batch(self, extra: Sequence[Gene] = ()) -> int: ...


class ReceiverView(Protocol):
    """How we take genes from one sender: `accept` runs on each verified gene;
    `finish_batch(refused)` once its batch is applied, with the genes the store refused
    after `accept` let them through (`SyncStore.apply_batch`: a version that changes a
    gene's origin or domain, a gene claiming our origin); returns how many it judged."""

    def accept(self, gene: Gene) -> bool: ...

    def finish_batch(self, refused: Sequence[RejectedGene] = ()) -> int: ...


SenderViewFactory = Callable[[str], SenderView]
ReceiverViewFactory = Callable[[str], ReceiverView]


class PolicyView:
    """The sender view of a plain share policy: stored genes go as they are."""

    def __init__(self, receiver: str, read_feed: FeedReader, share: SharePolicy) -> None:
        self.receiver = receiver
        self._read_feed = read_feed
        self._share = share
        self._sent = 0

    def read_feed(self, since: int, limit: int) -> Iterable[tuple[int, Gene | None]]:
        return self._read_feed(since, limit)

    def policy(self, receiver: str, gene: Gene) -> bool:
        allowed = self._share(receiver, gene)
        self._sent += allowed
        return allowed

    def outgoing(self, gene: Gene) -> Gene | None:
        return gene if self._share(self.receiver, gene) else None

    def finish_batch(self, extra: Sequence[Gene] = ()) -> int:
        sent, self._sent = self._sent + len(extra), 0
        return sent


class AcceptView:
    """The receiver view of a plain acceptance callback."""

    def __init__(self, sender: str, accept: AcceptPolicy) -> None:
        self.sender = sender
        self._accept = accept
        self._judged = 0

    def accept(self, gene: Gene) -> bool:
        self._judged += 1
        return self._accept(self.sender, gene)

    def finish_batch(self, refused: Sequence[RejectedGene] = ()) -> int:
        judged, self._judged = self._judged, 0
        return judged
