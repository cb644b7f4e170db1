"""Benchmarks: ``python -m agoplight.bench.<name>``."""
