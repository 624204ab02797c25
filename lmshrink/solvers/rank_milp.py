"""``milp`` for rank allocation: the exact optimum as a multiple-choice knapsack (Pyomo + HiGHS).

Matrix l may take any rank r of a candidate set R_l (its allowed ranks, thinned to multiples of ``grid_step``;
the smallest allowed rank and the dense rank k_l are always kept). A binary z_{l,r} says "matrix l has rank r":

    minimise    Σ_l Σ_{r∈R_l} w_l tail_l(r) · z_{l,r}              (tail_l(r) = Σ_{i≥r} σ_{l,i}², 0 when dense)
    subject to  Σ_{r∈R_l} z_{l,r} = 1                   for every l  (one rank per matrix)
                Σ_l Σ_{r∈R_l} cost_l(r) · z_{l,r} ≤ B                (the parameter budget)

This is the energy of :class:`~lmshrink.core.RankAllocationProblem` exactly, so HiGHS's proven optimum is the
optimal allocation over the candidate grid (over all allowed ranks with ``grid_step=1``). The objective is
divided by the energy of a greedy feasible allocation (so it is O(1) for HiGHS's tolerances, with its absolute gap
tolerance set to 1e-12); energies are recomputed from the problem
afterwards. The k best distinct allocations come from no-good cuts Σ_l z_{l,r*_l} ≤ L − 1, one per allocation
found. With ``fill`` the grid optimum is then topped up rank by rank while a step fits (off the grid).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import LmshrinkError, Samples, Solver, SolverCapabilities, option
from ..core.errors import require
from ..core.rank import RankAllocationProblem, repair_ranks
from .milp import highs, ranked_solves


def candidate_ranks(problem: Any, l: int, grid_step: int) -> np.ndarray:
    """Allowed ranks of matrix l that are multiples of ``grid_step``, plus its smallest allowed and its dense rank
    (``problem``: any problem with ``allowed_ranks(l)`` and ``max_rank(l)``, rank or joint)."""
    a = problem.allowed_ranks(l)
    if grid_step <= 1:
        return a
    keep = (a % grid_step == 0) | (a == a[0]) | (a == problem.max_rank(l))
    return a[keep]


@dataclass(frozen=True)
class RankMilpOptions:
    grid_step: int = option(8, "candidate ranks are multiples of this (1: every allowed rank)")
    fill: bool = option(False, "after solving on the grid, raise ranks off the grid while a step fits")
    mip_gap: float = option(1e-4, "relative gap at which HiGHS stops (1e-9 or 0: prove the optimum; slower on large "
                                  "models)")
    threads: int | None = option(None, "HiGHS threads (default: HiGHS's choice)")
    verbose: bool = option(False, "print HiGHS's log")


class RankMilpSolver(Solver):
    """Exact multiple-choice knapsack over a rank grid per matrix (Pyomo + HiGHS)."""

    name = "rank-milp"
    description = "Exact rank allocation: multiple-choice knapsack over a rank grid per matrix (Pyomo + HiGHS)."
    options = RankMilpOptions
    capabilities = SolverCapabilities(problem_types=(RankAllocationProblem,), proves_optimality=True)

    def sample(self, problem: RankAllocationProblem, *, num_solutions: int, seed: int | None,
               time_limit: float | None, options: RankMilpOptions) -> Samples:
        grid_step, fill, mip_gap, threads = options.grid_step, options.fill, options.mip_gap, options.threads
        verbose = options.verbose
        pyo = require("pyomo.environ", "milp", "The 'milp' solver")
        require("highspy", "milp", "The 'milp' solver")
        highs_mod = require("pyomo.contrib.appsi.solvers.highs", "milp", "The 'milp' solver")
        start = time.perf_counter()
        L = problem.num_matrices
        cands = [candidate_ranks(problem, l, grid_step) for l in range(L)]
        pairs = [(l, j) for l in range(L) for j in range(len(cands[l]))]
        # objective unit: the energy of a greedy feasible allocation, so the optimum is O(1) for HiGHS's tolerances
        scale = problem.energy(repair_ranks(problem, [c[0] for c in cands], fill=True)) or 1.0
        energy = {(l, j): problem.weight(l) * float(problem.tail_table(l)[cands[l][j]]) / scale for l, j in pairs}
        cost = {(l, j): float(problem.cost_table(l)[cands[l][j]]) for l, j in pairs}
        if sum(min(cost[l, j] for j in range(len(cands[l]))) for l in range(L)) > problem.budget + 1e-9:
            raise LmshrinkError("No allocation on the rank grid fits the budget; lower grid_step.")

        m = pyo.ConcreteModel()
        m.P = pyo.Set(initialize=pairs, dimen=2)
        m.z = pyo.Var(m.P, domain=pyo.Binary)
        m.one = pyo.Constraint(
            range(L), rule=lambda mdl, l: sum(mdl.z[l, j] for j in range(len(cands[l]))) == 1
        )
        m.budget = pyo.Constraint(expr=sum(cost[p] * m.z[p] for p in pairs) <= float(problem.budget))
        m.obj = pyo.Objective(expr=sum(energy[p] * m.z[p] for p in pairs), sense=pyo.minimize)
        m.cuts = pyo.ConstraintList()

        opt = highs(highs_mod, verbose=verbose, mip_gap=mip_gap, seed=seed, abs_gap=1e-12)
        if threads is not None:
            opt.highs_options["threads"] = int(threads)

        def read() -> tuple[np.ndarray, list[int]]:
            choice = [max(range(len(cands[l])), key=lambda j, l=l: pyo.value(m.z[l, j])) for l in range(L)]
            return np.array([cands[l][choice[l]] for l in range(L)], dtype=np.int64), choice

        def exclude(choice: list[int]) -> None:
            m.cuts.add(sum(m.z[l, choice[l]] for l in range(L)) <= L - 1)

        states, facts = ranked_solves(opt, m, count=num_solutions, time_limit=time_limit, start=start, scale=scale,
                                      read=read, exclude=exclude, name="milp", what="allocation")
        info: dict[str, Any] = {"grid_step": grid_step, "num_variables": len(pairs), **facts}
        if fill:
            states = [repair_ranks(problem, x, fill=True) for x in states]
        info["solve_time_s"] = time.perf_counter() - start
        return Samples(np.array(states), info)
