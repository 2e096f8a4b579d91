"""Benchmarks: honest evaluation (compare.py) and speed (speed.py)."""
