"""lmshrink's core: problems, solutions and the plugin contracts. Imports numpy only."""

from .adapter import BLOCK_KINDS, ArchitectureAdapter, Block, Gates
from .errors import (
    LmshrinkError,
    MissingCredentialsError,
    MissingDependencyError,
    ProblemTooLargeError,
    UnknownNameError,
)
from .method import RemovalMethod, Selection
from .objective import Objective
from .options import Option, option
from .plan import RankPlan, RemovalPlan
from .problem import BinaryQuadraticProblem, Constraint, Problem, load_problem
from .solution import RawSummary, Solution, SolutionSet
from .solver import Composite, Samples, Solver, SolverCapabilities

__all__ = [
    "ArchitectureAdapter",
    "BLOCK_KINDS",
    "BinaryQuadraticProblem",
    "Block",
    "Composite",
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
    "RawSummary",
    "RemovalMethod",
    "RemovalPlan",
    "Samples",
    "Selection",
    "Solution",
    "SolutionSet",
    "Solver",
    "SolverCapabilities",
    "UnknownNameError",
    "load_problem",
    "option",
]

from .rank import LossOracle, RankAllocationProblem  # noqa: E402

__all__ += ["LossOracle", "RankAllocationProblem"]
