"""gd.node."""
