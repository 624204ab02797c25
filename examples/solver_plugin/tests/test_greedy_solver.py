"""The plugin's own tests: lmshrink's solver conformance suite on the greedy solver."""

from lmshrink.testing import SolverConformance
from lmshrink_greedy import GreedySolver


class TestGreedySolver(SolverConformance):
    solver = GreedySolver()
