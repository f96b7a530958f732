"""The services room: the long-running conversations of a daemon with its peers.

Sync (change-feed pulls, repair), sovereignty (agreements, tombstones, audited
filtering) and the ledger (Raft over `/gd/raft`, gossip, fork alarms, the recorder and
its group commit), plus the verification pool they share. Each drives a sans-I/O core
from `gd.protocol` or `gd.ledger` over the network room's streams and keeps its state
in the storage room.

May import: `gd.node.net`, `gd.node.store`, the cores, and each other where one service
consumes another's events. Must not import `gd.node.app` or the daemon shell.
"""
