"""The node's HTTP API (issue 16): REST/JSON under /v1, served by the daemon itself.

Rooms: `settings` ([api] in config.toml), `tokens` (credentials stored as hashes),
`auth` (roles and scopes), `problems` (RFC 9457 errors), `ratelimit`, `routing` (the one
route table the server and the OpenAPI document are both built from), `views_*`
(handlers), `job_store` + `jobs` (durable evaluations), `events` (SSE), `server`
(hypercorn on the daemon's trio loop).

May import: `gd.node.app` (the same use cases the CLI runs), `gd.node.store`,
`gd.node.control_methods`, the gate's public face in `gd.node.net`, the shell's clock and
config, and the cores. Nothing below it imports the API (the daemon shell starts it).

This package's `__init__` imports nothing heavy: config.py reads `settings` at every
start, including commands that never serve HTTP.
"""
