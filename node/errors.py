"""Errors of the node's network edge, in a module that imports nothing heavy.

The CLI turns these into clean messages; keeping them here means a read-only command
does not import libp2p (≈1.5 s) just to know the names of its exceptions.
"""

from __future__ import annotations


class HostError(RuntimeError):
    """The host could not be built or started (bad listen address, port in use, ...)."""


class BootstrapError(ValueError):
    """bootstrap-peers.toml is unreadable or holds an invalid entry (named in the message)."""
