"""The application room: what a person or a program asks a node to do.

Importing genes, evaluating them (decisions, replay, adaptation, history imports),
approving or rejecting what peers sent, reading states files, the per-domain settings.
Called by the CLI (no daemon) or by the daemon (control socket, HTTP API).

May import: `gd.node.store`, `gd.node.services.recorder` (ledger statements),
`gd.node.services.worker_procs` (the import's signing processes), the cores and
`gd.motors`. Must not import `gd.node.net` or the daemon shell.
"""
