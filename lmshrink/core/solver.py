"""The Solver contract: implement :meth:`Solver.sample`, get validated, ranked, timed :meth:`Solver.solve`.

A solver knows nothing of models. It receives a problem (plain arrays) and proposes states; the base class checks
them against the problem, recomputes their energies from the problem itself, removes duplicates, sorts and times
the run, so every backend reports comparable numbers.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .errors import LmshrinkError
from .options import Option, validate_options
from .problem import BinaryQuadraticProblem, Problem
from .solution import Solution, SolutionSet


@dataclass
class Samples:
    """What :meth:`Solver.sample` returns: candidate states (rows) and backend facts."""

    states: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    #: optional per-row facts (e.g. ``{"num_occurrences": [...]}``), carried into each Solution's info
    per_state: dict[str, list[Any]] = field(default_factory=dict)


class Solver(ABC):
    """Base class of every solver plugin.

    Subclasses set :attr:`name`, :attr:`problem_types`, :attr:`options` and implement :meth:`sample`.
    """

    name: ClassVar[str] = ""
    #: one-line description shown by ``lmshrink plugins``
    description: ClassVar[str] = ""
    problem_types: ClassVar[tuple[type[Problem], ...]] = (BinaryQuadraticProblem,)
    #: keyword options accepted by :meth:`solve`, with defaults and help
    options: ClassVar[Mapping[str, Option]] = {}
    #: True when the best returned solution is a proven optimum
    exact: ClassVar[bool] = False

    def supports(self, problem: Problem) -> bool:
        """Whether this solver can solve ``problem``."""
        return isinstance(problem, self.problem_types)

    @abstractmethod
    def sample(
        self, problem: Problem, *, num_solutions: int, seed: int | None, time_limit: float | None, **options: Any
    ) -> Samples:
        """Propose candidate states for ``problem`` (any number, duplicates allowed, feasible ones kept)."""

    def solve(
        self,
        problem: Problem,
        *,
        num_solutions: int = 1,
        seed: int | None = None,
        time_limit: float | None = None,
        **options: Any,
    ) -> SolutionSet:
        """Solve ``problem`` and return up to ``num_solutions`` distinct feasible solutions, lowest energy first."""
        if not self.supports(problem):
            kinds = ", ".join(t.__name__ for t in self.problem_types)
            raise LmshrinkError(
                f"Solver {self.name!r} solves {kinds}, not {type(problem).__name__}. Solvers may share a name across "
                f"problem types: lmshrink.plugins.get_solver({self.name!r}, problem) picks the one for this problem."
            )
        if num_solutions < 1:
            raise LmshrinkError("num_solutions must be at least 1.")
        opts = validate_options(f"Solver {self.name!r}", self.options, options)
        start = time.perf_counter()
        raw = self.sample(problem, num_solutions=num_solutions, seed=seed, time_limit=time_limit, **opts)
        elapsed = time.perf_counter() - start
        result = rank_states(problem, raw, solver=self.name, num_solutions=num_solutions)
        result.time_s = elapsed
        result.info.setdefault("options", opts)
        result.info.setdefault("seed", seed)
        return result

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def rank_states(problem: Problem, raw: Samples, *, solver: str, num_solutions: int) -> SolutionSet:
    """Keep the feasible, distinct rows of ``raw.states``, recompute their energies and sort them."""
    states = np.asarray(raw.states)
    if states.ndim == 1:
        states = states[None, :]
    info = dict(raw.info)
    if states.size == 0:
        raise LmshrinkError(f"Solver {solver!r} returned no state.")
    states = np.rint(states).astype(np.int64)
    feasible = np.array([problem.is_feasible(s) for s in states])
    info["num_samples"] = int(len(states))
    info["num_infeasible"] = int((~feasible).sum())
    if not feasible.any():
        raise LmshrinkError(f"Solver {solver!r} found no feasible state ({len(states)} proposed).")
    keep = np.flatnonzero(feasible)
    _, first = np.unique(states[keep], axis=0, return_index=True)
    keep = keep[np.sort(first)]
    energies = problem.energies(states[keep])
    order = np.argsort(energies, kind="stable")[:num_solutions]
    solutions = []
    for k in order:
        row = keep[k]
        extra = {key: values[row] for key, values in raw.per_state.items()}
        solutions.append(Solution(tuple(int(v) for v in states[row]), float(energies[k]), extra))
    return SolutionSet(solutions, solver=solver, info=info)
