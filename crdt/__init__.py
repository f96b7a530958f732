"""gd.crdt."""
