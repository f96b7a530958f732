"""gd.protocol."""
