"""An lmshrink solver plugin: per constraint, the variables with the lowest scores, from jittered restarts."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

import lmshrink
from lmshrink.core import Samples, Solver, SolverCapabilities, option


@dataclass(frozen=True)
class GreedyOptions:
    restarts: int = option(8, "greedy picks, each from jittered scores after the first", minimum=1)
    jitter: float = option(0.1, "noise on the scores, relative to their mean size", minimum=0.0)


class GreedySolver(Solver):
    """Scores each variable by its own energy (linear + diagonal) and picks the lowest ones per constraint."""

    name = "greedy"
    description = "Greedy pick of the lowest linear + diagonal scores per constraint, jittered restarts."
    options = GreedyOptions
    capabilities = SolverCapabilities(budget_options={"reads": "restarts"}, quick_options={"restarts": 4})

    def sample(self, problem, *, num_solutions, seed, time_limit, options: GreedyOptions) -> Samples:
        rng = np.random.default_rng(seed)
        deadline = None if time_limit is None else time.perf_counter() + time_limit
        score = problem.linear + np.diag(problem.quadratic)
        free = np.array(problem.free_indices, dtype=int)
        states, stopped = [], False
        for k in range(options.restarts):
            if deadline is not None and states and time.perf_counter() > deadline:
                stopped = True
                break
            noise = options.jitter * np.abs(score).mean() * rng.standard_normal(len(score))
            s = score + (noise if k else 0.0)
            x = np.zeros(problem.num_variables, dtype=np.int8)
            for c in problem.constraints:
                idx = np.array(c.indices)
                x[idx[np.argsort(s[idx], kind="stable")[: c.equals]]] = 1
            x[free] = s[free] < 0
            states.append(x)
        return Samples(np.array(states), {"restarts": len(states)}, stopped_early=stopped)


@lmshrink.hookimpl
def lmshrink_register_solvers(register):
    register(GreedySolver)
