"""The problem library's table: per instance its size, constraints, proven or best known energy, and how well the
energy ranks the measured loss of its lowest states. ``python -m benchmarks.library [--from DIR]``."""

from .table import library_table, main

__all__ = ["library_table", "main"]
