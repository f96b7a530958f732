"""gd.ledger."""
