"""gd.cli."""
