"""``uniform``: the same kept-parameter ratio in every matrix (the SVD-LLM baseline).

Matrix l gets the largest allowed rank whose cost is at most ``ratio · m_l n_l``, where ratio = budget / Σ_l m_l n_l
(so the total never exceeds the budget). At ratio 1 every matrix stays dense. With ``fill`` the few numbers left
over by rounding are then spent greedily on the steps with the most whitened error removed per number.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core import Samples, Solver, SolverCapabilities, option
from ..core.rank import RankAllocationProblem, repair_ranks, uniform_ranks


@dataclass(frozen=True)
class UniformOptions:
    fill: bool = option(False, "spend what rounding leaves over on the best further rank steps")


class UniformSolver(Solver):
    """Every matrix keeps the same fraction of its parameters."""

    name = "rank-uniform"
    description = "The same kept-parameter ratio in every matrix (SVD-LLM's uniform truncation)."
    options = UniformOptions
    capabilities = SolverCapabilities(problem_types=(RankAllocationProblem,))

    def sample(self, problem: RankAllocationProblem, *, num_solutions: int, seed: int | None,
               time_limit: float | None, options: UniformOptions) -> Samples:
        fill = options.fill
        x = uniform_ranks(problem)
        if fill or problem.cost(x) > problem.budget:  # over budget only when a min rank alone exceeds its share
            x = repair_ranks(problem, x, fill=fill)
        return Samples(x[None, :], {"ratio": problem.ratio, "fill": fill})
