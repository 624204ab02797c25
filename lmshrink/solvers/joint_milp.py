"""``joint-milp``: the exact optimum of a joint removal-and-rank problem as a grouped multiple-choice knapsack.

For :class:`~lmshrink.core.joint.JointCompressionProblem`: a binary z_b per branch (kept) and, for each matrix m
of branch b, binaries y_{m,j} over its candidate ranks R_m (allowed ranks thinned to multiples of ``grid_step``;
the smallest allowed and the dense rank always kept):

    minimise    Σ_b ΔL_b (1 − z_b) + Σ_m Σ_{j∈R_m} err_m(j) y_{m,j}
    subject to  Σ_{j∈R_m} y_{m,j} = z_{b(m)}               for every m   (a kept branch's matrix takes one rank)
                Σ_m Σ_{j∈R_m} cost_m(j) y_{m,j} ≤ B                      (the budget; removed branches cost 0)
                z_b = 1                                     without removal

which is the energy (1) of the problem exactly, so HiGHS's proven optimum is the optimal choice over the grid.
The objective is divided by a positive unit (the summed |ΔL_b| and errors at the smallest ranks) to keep it O(1)
for HiGHS's tolerances; energies are recomputed from the problem afterwards. Further distinct solutions come from
no-good cuts on the chosen (z, y), one per solution found.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import Samples, Solver, SolverCapabilities, option
from ..core.errors import require
from ..core.joint import JointCompressionProblem
from .milp import highs, ranked_solves
from .rank_milp import candidate_ranks


def joint_candidates(problem: JointCompressionProblem, m: int, grid_step: int) -> np.ndarray:
    """Allowed ranks of matrix m on the grid, chosen as for rank allocation (:func:`.rank_milp.candidate_ranks`)."""
    return candidate_ranks(problem, m, grid_step)


@dataclass(frozen=True)
class JointMilpOptions:
    grid_step: int = option(8, "candidate ranks are multiples of this (1: every allowed rank)")
    mip_gap: float = option(1e-6, "relative gap at which HiGHS stops (0: prove the optimum)")
    threads: int | None = option(None, "HiGHS threads (default: HiGHS's choice)")
    verbose: bool = option(False, "print HiGHS's log")


class JointMilpSolver(Solver):
    """Exact branch removal and rank allocation under one budget (Pyomo + HiGHS)."""

    name = "joint-milp"
    description = "Exact joint branch removal and rank allocation: grouped multiple-choice knapsack (Pyomo + HiGHS)."
    options = JointMilpOptions
    capabilities = SolverCapabilities(problem_types=(JointCompressionProblem,), proves_optimality=True)

    def sample(self, problem: JointCompressionProblem, *, num_solutions: int, seed: int | None,
               time_limit: float | None, options: JointMilpOptions) -> Samples:
        grid_step, mip_gap, threads, verbose = options.grid_step, options.mip_gap, options.threads, options.verbose
        pyo = require("pyomo.environ", "milp", "The 'joint-milp' solver")
        require("highspy", "milp", "The 'joint-milp' solver")
        highs_mod = require("pyomo.contrib.appsi.solvers.highs", "milp", "The 'joint-milp' solver")
        start = time.perf_counter()
        B, M = problem.num_branches, problem.num_matrices
        cands = [joint_candidates(problem, m, grid_step) for m in range(M)]
        pairs = [(m, j) for m in range(M) for j in range(len(cands[m]))]
        unit = float(np.abs(problem.removal_loss).sum()
                     + sum(problem.error_table(m)[cands[m][0]] for m in range(M))) or 1.0
        err = {(m, j): float(problem.error_table(m)[cands[m][j]]) / unit for m, j in pairs}
        cost = {(m, j): float(problem.cost_table(m)[cands[m][j]]) for m, j in pairs}

        mdl = pyo.ConcreteModel()
        mdl.P = pyo.Set(initialize=pairs, dimen=2)
        mdl.y = pyo.Var(mdl.P, domain=pyo.Binary)
        mdl.z = pyo.Var(range(B), domain=pyo.Binary)
        mdl.one = pyo.Constraint(range(M), rule=lambda md, m: sum(md.y[m, j] for j in range(len(cands[m])))
                                 == md.z[problem.branch_of[m]])
        if not problem.allow_removal:
            for b in range(B):
                mdl.z[b].fix(1)
        mdl.budget = pyo.Constraint(expr=sum(cost[p] * mdl.y[p] for p in pairs) <= float(problem.budget))
        removal = [float(v) / unit for v in problem.removal_loss]
        mdl.obj = pyo.Objective(expr=sum(removal[b] * (1 - mdl.z[b]) for b in range(B))
                                + sum(err[p] * mdl.y[p] for p in pairs), sense=pyo.minimize)
        mdl.cuts = pyo.ConstraintList()
        opt = highs(highs_mod, verbose=verbose, mip_gap=mip_gap, seed=seed, abs_gap=1e-12)
        if threads is not None:
            opt.highs_options["threads"] = int(threads)

        def read() -> tuple[np.ndarray, tuple[np.ndarray, list[int]]]:
            z = np.array([int(round(pyo.value(mdl.z[b]))) for b in range(B)], dtype=np.int64)
            pick = [max(range(len(cands[m])), key=lambda j, m=m: pyo.value(mdl.y[m, j])) for m in range(M)]
            r = np.array([cands[m][pick[m]] if z[problem.branch_of[m]] else 0 for m in range(M)], dtype=np.int64)
            return np.concatenate([z, r]), (z, pick)

        def exclude(choice: tuple[np.ndarray, list[int]]) -> None:
            # no-good cut on this (z, y): at least one of its chosen binaries must flip
            z, pick = choice
            ones = [mdl.z[b] for b in range(B) if z[b]] + [mdl.y[m, pick[m]] for m in range(M)
                                                            if z[problem.branch_of[m]]]
            zeros = [mdl.z[b] for b in range(B) if not z[b]]
            mdl.cuts.add(sum(ones) - sum(zeros) <= len(ones) - 1)

        states, facts = ranked_solves(
            opt, mdl, count=num_solutions, time_limit=time_limit, start=start, scale=unit, read=read,
            exclude=exclude, name="joint-milp", what="choice",
            infeasible="No choice of removals and ranks on the grid fits the budget; lower grid_step or raise the "
                       "ratio.")
        info: dict[str, Any] = {"grid_step": grid_step, "num_variables": len(pairs) + B, **facts}
        info["solve_time_s"] = time.perf_counter() - start
        return Samples(np.array(states), info)


__all__ = ["JointMilpSolver", "joint_candidates"]
