"""Roles of API credentials, ordered: each role can do everything the ones below it can.

    viewer    read what its scope covers
    operator  + evaluate, run jobs, sync now, import genes
    approver  + approve, reject, resolve conflicts
    admin     + share, revoke, tokens, audit export

An ordered ladder rather than free-form permissions: four levels are what Syncthing's
and Kubo's users ask of a node (read, run, decide, administer), and an ordering makes
"deny by default" a single comparison per route.
"""

from __future__ import annotations

import enum
from typing import Final


class Role(enum.IntEnum):
    VIEWER = 1
    OPERATOR = 2
    APPROVER = 3
    ADMIN = 4

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except (KeyError, AttributeError):
            raise ValueError(f"unknown role {text!r}: one of "
                             f"{', '.join(r.label for r in cls)}") from None

    @property
    def label(self) -> str:
        return self.name.lower()


# A scope naming every domain (an admin's, or a viewer of the whole node).
ALL_DOMAINS: Final = "*"
