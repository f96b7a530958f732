"""Errors raised by the gene model.

A `ValidationError` always names the field at fault, because the people who see it are
importing files by hand and need to know which column of which line to fix.
"""

from __future__ import annotations


class ValidationError(ValueError):
    """A record failed validation; `field` names the offending field (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class DecodeError(ValueError):
    """Bytes that claim to be a canonical record could not be decoded."""


class SignatureError(ValueError):
    """A signature did not verify, or the signer's key could not be recovered."""
