"""Example lmshrink plugin: a greedy solver of binary problems."""

from .solver import GreedySolver

__all__ = ["GreedySolver"]
