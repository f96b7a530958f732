"""Whose fault is it? The two error classes every protocol core raises (h11's split).

`LocalProtocolError`: *we* misused the protocol (sent a message the state machine does not
allow, built a frame over the limit, asked for an unregistered message type). It is a bug
on our side; let it propagate and fix the code.

`RemoteProtocolError`: the *peer* sent something invalid (a malformed, truncated, oversize
or unknown frame, a message out of order, a bad signature). It never crashes the process:
the caller closes that one conversation, logs the reason and scores the peer down.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class; catch one of the two subclasses, never this one, in production code."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LocalProtocolError(ProtocolError):
    """Our side broke the protocol (a programming error here, not the peer's doing)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; close the conversation with it, do not crash."""


class LimitExceeded(RemoteProtocolError):
    """A peer went past a per-peer limit (streams, bytes, stored proposals) for long
    enough that we disconnect it: the daemon drops and bans it at once."""
