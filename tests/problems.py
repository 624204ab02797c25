"""Seeded random problems shared by the solver tests (no test collected here): the generators of lmshrink's solver
conformance suite."""

from lmshrink.testing.solvers import brute_force, fisher_problem, random_problem

__all__ = ["brute_force", "fisher_problem", "random_problem"]
