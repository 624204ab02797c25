"""lmshrink's core: problems, solutions and the plugin contracts. Imports numpy only."""

from .adapter import BLOCK_KINDS, ArchitectureAdapter, Block, Gates
from .errors import (
    LmshrinkError,
    MissingCredentialsError,
    MissingDependencyError,
    ProblemTooLargeError,
    UnknownNameError,
)
from .objective import Objective
from .options import Option
from .plan import RankPlan, RemovalPlan
from .problem import BinaryQuadraticProblem, Constraint, Problem, load_problem
from .solution import Solution, SolutionSet
from .solver import Samples, Solver

__all__ = [
    "ArchitectureAdapter",
    "BLOCK_KINDS",
    "BinaryQuadraticProblem",
    "Block",
    "Constraint",
    "Gates",
    "LmshrinkError",
    "MissingCredentialsError",
    "MissingDependencyError",
    "Objective",
    "Option",
    "Problem",
    "ProblemTooLargeError",
    "RankPlan",
    "RemovalPlan",
    "Samples",
    "Solution",
    "SolutionSet",
    "Solver",
    "UnknownNameError",
    "load_problem",
]

from .rank import LossOracle, RankAllocationProblem  # noqa: E402

__all__ += ["LossOracle", "RankAllocationProblem"]
