"""Errors raised by the motors, split by whose fault they are.

`MotorInputError`: the caller handed us something unusable (unknown domain, a state
without a feature the gene needs, NaN values, a request outside its limits). Nothing has
been computed or stored when it is raised.

`CheckpointError`: stored motor data (a meristic checkpoint) is corrupt or belongs to a
different search; the store is at fault, not the request.
"""

from __future__ import annotations


class MotorInputError(ValueError):
    """The request, gene or states given to a motor are invalid; says which and why."""


class UnknownDomainError(MotorInputError, LookupError):
    """No domain pack is registered under the requested name."""


class CheckpointError(RuntimeError):
    """A stored meristic checkpoint cannot be decoded or does not match the search."""
