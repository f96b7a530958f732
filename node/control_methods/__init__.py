"""Writes the CLI asks of a node: one definition, run by whoever is the node's writer.

`ops` holds each write (gene import, synapse, approve, share, ...) as a function of a
`WriteContext` returning plain data, so the CLI prints the same thing whichever process
ran it. `daemon_side` registers them as control-socket methods inside a running daemon,
which then tells its sync and sovereignty services at once (no polling); with no daemon,
`gd.cli.writer` runs the same functions in the CLI process under the home's lock.
May import: node (shell, store, services' public objects, app), cores.
"""
