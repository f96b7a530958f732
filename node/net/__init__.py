"""The network room: the libp2p host and everything that talks to peers as peers.

Holds the host (Noise-only, yamux, the inbound-slot fix), discovery (DHT, bootstrap
file, mDNS), the mesh planner, the relay, the peer table with scores and per-peer
budgets, framed streams, the deny list and region membership.

May import: `gd.genome`, `gd.protocol`, `gd.node.errors`, `gd.node.config`,
`gd.node.logging`, and each other. Must not import `gd.node.store`,
`gd.node.services` or `gd.node.app`: the network knows peers, not genes.
"""
