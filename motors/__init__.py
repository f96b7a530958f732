"""gd.motors."""
