"""``exact``: enumerate every feasible state, vectorized, and keep the k lowest.

A run that finishes proves the k lowest states; a ``time_limit`` stops the enumeration between chunks and returns
the k lowest seen so far, unproven.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import BinaryQuadraticProblem, Samples, Solver, SolverCapabilities, option
from ..core.errors import ProblemTooLargeError
from ..plugins import hookimpl

CHUNK = 1 << 15


def count_feasible(problem: BinaryQuadraticProblem) -> int:
    """Number of states that satisfy every constraint (:meth:`BinaryQuadraticProblem.num_feasible_states`)."""
    return problem.num_feasible_states()


def feasible_states(problem: BinaryQuadraticProblem, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    """Yield every feasible state, as (≤ chunk, N) int8 matrices."""
    n = problem.num_variables
    groups = [(np.array(c.indices), itertools.combinations(range(len(c.indices)), c.equals)) for c in problem.constraints]
    per_group = [[np.array(comb, dtype=np.int64) for comb in combs] for _, combs in groups]
    free = np.array(problem.free_indices, dtype=np.int64)
    free_patterns = itertools.product((0, 1), repeat=len(free))
    block: list[np.ndarray] = []
    for pattern in free_patterns:
        for combo in itertools.product(*per_group) if per_group else [()]:
            x = np.zeros(n, dtype=np.int8)
            for (idx, _), pick in zip(groups, combo):
                x[idx[pick]] = 1
            if len(free):
                x[free] = pattern
            block.append(x)
            if len(block) == chunk:
                yield np.stack(block)
                block = []
    if block:
        yield np.stack(block)


def _single_group_chunks(problem: BinaryQuadraticProblem, chunk: int) -> Iterator[np.ndarray]:
    """Fast path for one constraint over all variables: combinations straight into index arrays."""
    (c,) = problem.constraints
    n, m = problem.num_variables, c.equals
    combos = itertools.combinations(c.indices, m)
    while True:
        flat = np.fromiter(itertools.chain.from_iterable(itertools.islice(combos, chunk)), dtype=np.int64)
        if flat.size == 0 and m > 0:
            return
        rows = flat.reshape(-1, m) if m else np.zeros((1, 0), dtype=np.int64)
        X = np.zeros((len(rows), n), dtype=np.int8)
        np.put_along_axis(X, rows, 1, axis=1)
        yield X
        if m == 0:
            return


@dataclass(frozen=True)
class ExactOptions:
    max_states: int = option(200_000_000, "refuse problems with more feasible states than this", minimum=1)


class ExactSolver(Solver):
    """Exhaustive enumeration of the feasible states; proves the optimum and the k lowest states."""

    name = "exact"
    description = "Exhaustive enumeration of all feasible states (proves the k lowest)."
    options = ExactOptions
    capabilities = SolverCapabilities(proves_optimality=True, deterministic=True, exponential_in="feasible_states")

    def sample(self, problem: BinaryQuadraticProblem, *, num_solutions: int, seed: int | None,
               time_limit: float | None, options: ExactOptions) -> Samples:
        total = count_feasible(problem)
        max_states = options.max_states
        if total > max_states:
            raise ProblemTooLargeError(
                f"exact would enumerate {total:,} feasible states (max_states={max_states:,}); use a heuristic "
                "solver such as 'anneal', or an exact one that scales, such as 'milp'."
            )
        single = len(problem.constraints) == 1 and not problem.free_indices
        chunks = _single_group_chunks(problem, CHUNK) if single else feasible_states(problem)
        best_x = np.zeros((0, problem.num_variables), dtype=np.int8)
        best_e = np.zeros(0)
        deadline = None if time_limit is None else time.perf_counter() + time_limit
        seen = 0
        for X in chunks:
            if deadline is not None and seen and time.perf_counter() > deadline:
                break
            seen += len(X)
            E = problem.energies(X)
            X = np.concatenate([best_x, X])
            E = np.concatenate([best_e, E])
            if len(E) > num_solutions:
                keep = np.argpartition(E, num_solutions - 1)[:num_solutions]
                X, E = X[keep], E[keep]
            best_x, best_e = X, E
        done = seen >= total
        info = {"num_feasible_states": total, "num_enumerated": seen}
        return Samples(best_x, info, proven_optimal=done, stopped_early=not done)


@hookimpl
def lmshrink_register_solvers(register: Any) -> None:
    register(ExactSolver)
