"""Solver study: every installed binary solver on real and generated block-removal problems; success probability,
gap, time to target and TTS99. ``python -m benchmarks.solvers [--quick]``."""

from .study import Settings, generated_problem, parse_args, run

__all__ = ["Settings", "generated_problem", "parse_args", "run"]
