"""gd.testnet."""
