"""Ours vs the tutorial's speed, and other speed checks (scripts)."""
