"""The storage room: every LMDB store of a node.

The Cortex (genes, versions, indexes, feed, checkpoints, synapses, experiences,
decisions) and the stores that live in its environment: the audit log, policies and
agreements, the sync applier and conflict queue, the adaptation checkpoints, the
Cortex owner stamp, proposal bounds.

May import: `gd.genome`, `gd.crdt`, `gd.ledger`, `gd.protocol`, `gd.motors` (pure
checks only), `gd.node.errors`, `gd.node.config`, and each other. Must not import
`gd.node.net`, `gd.node.services`, `gd.node.app` or trio: a store is called from a
worker thread and knows nothing of peers or the event loop.
"""
