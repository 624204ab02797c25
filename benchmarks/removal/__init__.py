"""Removal quality study: perplexity of the model each objective and baseline chooses, and how well each
objective's energy predicts the measured loss. ``python -m benchmarks.removal [--quick]``."""

from .study import Settings, parse_args, run

__all__ = ["Settings", "parse_args", "run"]
