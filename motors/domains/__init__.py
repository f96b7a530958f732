"""gd.motors.domains."""
