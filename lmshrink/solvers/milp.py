"""``milp``: the exact optimum of a binary problem as a mixed-integer linear program (Pyomo + HiGHS).

HiGHS solves no MIQP, so the quadratic objective is linearized. For every pair i < j with Q_ij ≠ 0 a continuous
y_ij ∈ [0, 1] stands for the product x_i x_j, tied to it by the McCormick inequalities

    y_ij ≤ x_i,   y_ij ≤ x_j,   y_ij ≥ x_i + x_j − 1,

which force y_ij = x_i x_j at every integer x whatever the sign of Q_ij (with Q_ij ≥ 0 only the last one binds
at the optimum, with Q_ij < 0 only the first two). The objective becomes

    offset + Σ_i (l_i + Q_ii) x_i + Σ_{i<j} 2 Q_ij y_ij            (x_i² = x_i, Q symmetric).

The LP relaxation of that alone is weak. The cardinality constraints give the reformulation-linearization (RLT)
cuts of Sherali and Adams: multiplying Σ_{j∈c} x_j = M_c by x_i gives

    Σ_{j∈c, j≠i} y_ij = (M_c − [i∈c]) · x_i,

valid for every variable i and every constraint c (a variable of the group itself, one of another group, or a
free one). The equality needs a y_ij for every j of c; where some Q_ij = 0 left a pair without one, the row is
kept as the (still valid) inequality Σ ≤ (M_c − [i∈c]) x_i. These cuts close most of the gap on dense
block-removal problems: HiGHS proves a Fisher-like N = 80, M = 8 problem with unequal block scales in about a
second; nearly equal block scales (many near-ties) take tens of seconds on 2 cores.

A weighted band ``L ≤ Σ_{j∈c} w_j x_j ≤ U`` (a parameter budget) is two linear rows, and its RLT cuts, from
multiplying by x_i, are ``L·x_i ≤ Σ_{j∈c, j≠i} w_j y_ij + [i∈c] w_i x_i ≤ U·x_i`` (the upper one kept with pairs
missing when the weights are non-negative, the lower one only with every pair present).

The k lowest distinct solutions come from re-solving with a no-good cut per solution already found,
Σ_{i: x*_i=1} (1 − x_i) + Σ_{i: x*_i=0} x_i ≥ 1, which removes exactly that one vector. Each re-solve is proven
optimal in turn (so the whole top-k list is exact), unless the time limit stops it: then the best found so far
is returned with ``optimal = False`` and the relative ``gap`` between it and HiGHS's lower bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import BinaryQuadraticProblem, LmshrinkError, Samples, Solver, SolverCapabilities, option
from ..core.errors import require
from .repair import repair, swap_descent


def _gap(primal: float | None, bound: float | None) -> float | None:
    """Relative MIP gap |primal − bound| / max(|primal|, 1e-10), HiGHS's definition."""
    if primal is None or bound is None or not np.isfinite(bound):
        return None
    return float(abs(primal - bound) / max(abs(primal), 1e-10))


@dataclass(frozen=True)
class MilpOptions:
    rlt: bool = option(True, "add the reformulation-linearization cuts the cardinality constraints give")
    mip_gap: float = option(1e-9, "relative gap at which HiGHS stops (a proof needs it near 0)", minimum=0.0)
    threads: int | None = option(None, "HiGHS threads (default: HiGHS's choice)", minimum=1)
    warm_start: bool = option(True, "start HiGHS from a greedy feasible solution")
    verbose: bool = option(False, "print HiGHS's log")


def linearized_model(problem: BinaryQuadraticProblem, rlt: bool = True) -> Any:
    """The MILP that ``milp`` solves, as a Pyomo model: binary ``x``, continuous ``y`` for the products, McCormick
    rows, the cardinality constraints and (``rlt``) the RLT cuts; ``model.write("p.lp")`` exports it."""
    pyo = require("pyomo.environ", "milp", "The linearized MILP")
    return MilpSolver._build(pyo, problem, rlt)[0]


class MilpSolver(Solver):
    """Exact MILP (McCormick + RLT linearization) solved by HiGHS through Pyomo; k best via no-good cuts."""

    name = "milp"
    description = "Exact MILP with RLT cuts (Pyomo + HiGHS); proves the optimum and the k best via no-good cuts."
    options = MilpOptions
    capabilities = SolverCapabilities(proves_optimality=True, deterministic=True,
                                      requires=("pyomo.environ", "highspy"), extra="milp",
                                      constraint_kinds=("cardinality", "weighted"))

    def sample(self, problem: BinaryQuadraticProblem, *, num_solutions: int, seed: int | None,
               time_limit: float | None, options: MilpOptions) -> Samples:
        rlt, mip_gap, threads = options.rlt, options.mip_gap, options.threads
        warm_start, verbose = options.warm_start, options.verbose
        pyo = require("pyomo.environ", "milp", "The 'milp' solver")
        require("highspy", "milp", "The 'milp' solver")
        highs_mod = require("pyomo.contrib.appsi.solvers.highs", "milp", "The 'milp' solver")
        start = time.perf_counter()

        model, pairs = self._build(pyo, problem, rlt)
        # no absolute gap (HiGHS's default 1e-6 would stop early on problems with a small energy scale)
        opt = highs(highs_mod, verbose=verbose, mip_gap=mip_gap, seed=seed, abs_gap=0.0)
        if threads is not None:
            opt.highs_options["threads"] = int(threads)
        if warm_start:
            self._warm_start(problem, model, pairs)
            opt.config.warmstart = True

        n = problem.num_variables
        states: list[np.ndarray] = []
        info: dict[str, Any] = {
            "num_products": len(pairs),
            "num_constraints": int(model.nconstraints()),
            "rlt": bool(rlt),
            "solves": [],
        }
        all_proven = True
        timed_out = False
        for k in range(num_solutions):
            if time_limit is not None:
                left = time_limit - (time.perf_counter() - start)
                if left <= 0 and k > 0:
                    all_proven, timed_out = False, True
                    break
                opt.config.time_limit = max(left, 0.01)  # the first solve always runs, for a best-found state
            res = opt.solve(model)
            term = str(res.termination_condition).rsplit(".", 1)[-1]
            if term == "infeasible":  # every feasible vector is already listed
                break
            primal, bound = res.best_feasible_objective, res.best_objective_bound
            if primal is None:
                if k == 0:
                    raise LmshrinkError(
                        f"'milp' found no feasible solution before stopping ({term}); raise the time limit."
                    )
                all_proven, timed_out = False, True
                break
            res.solution_loader.load_vars()
            x = np.array([round(pyo.value(model.x[i])) for i in range(n)], dtype=np.int8)
            states.append(x)
            gap = _gap(primal, bound)
            proven = term == "optimal"
            info["solves"].append({"termination": term, "objective": primal, "bound": bound, "gap": gap})
            if k == 0:
                info.update(objective=primal, bound=bound, gap=0.0 if proven else gap, optimal=proven)
            if not proven:
                all_proven, timed_out = False, True
                break  # time is up: later solves would only repeat the stop
            self._add_no_good(pyo, model, x)
        # True when each listed solution was proven the best of what the previous ones left (an exact top-k)
        info["optimal_top_k"] = all_proven
        info["solve_time_s"] = time.perf_counter() - start
        return Samples(np.array(states), info, proven_optimal=bool(info.get("optimal")), stopped_early=timed_out)

    # --- model --------------------------------------------------------------------------------------------------
    @staticmethod
    def _build(pyo: Any, problem: BinaryQuadraticProblem, rlt: bool) -> tuple[Any, list[tuple[int, int]]]:
        n = problem.num_variables
        Q = problem.quadratic
        iu, ju = np.triu_indices(n, 1)
        nz = Q[iu, ju] != 0
        pairs = list(zip(iu[nz].tolist(), ju[nz].tolist()))
        model = pyo.ConcreteModel("lmshrink_milp")
        model.x = pyo.Var(range(n), domain=pyo.Binary)
        model.y = pyo.Var(pairs, bounds=(0.0, 1.0))
        x, y = model.x, model.y

        # McCormick envelope of y = x_i x_j, exact at integer x for either sign of Q_ij
        model.y_le_i = pyo.Constraint(pairs, rule=lambda m, i, j: m.y[i, j] <= m.x[i])
        model.y_le_j = pyo.Constraint(pairs, rule=lambda m, i, j: m.y[i, j] <= m.x[j])
        model.y_ge = pyo.Constraint(pairs, rule=lambda m, i, j: m.y[i, j] >= m.x[i] + m.x[j] - 1)

        model.cardinality = pyo.ConstraintList()
        for c in problem.constraints:
            if c.is_cardinality:
                model.cardinality.add(sum(x[i] for i in c.indices) == c.equals)
                continue
            activity = sum(float(w) * x[i] for i, w in zip(c.indices, c.weight_array()))
            if c.lower is not None:
                model.cardinality.add(activity >= float(c.lower))
            if c.upper is not None:
                model.cardinality.add(activity <= float(c.upper))

        model.rlt = pyo.ConstraintList()
        if rlt:
            have = set(pairs)
            for c in problem.constraints:
                if not c.is_cardinality:
                    _band_rlt(model.rlt, c, x, y, have, n)
                    continue
                members = set(c.indices)
                for i in range(n):
                    others = [j for j in c.indices if j != i]
                    present = [(min(i, j), max(i, j)) for j in others if (min(i, j), max(i, j)) in have]
                    if not present:
                        continue
                    rhs = (c.equals - (1 if i in members else 0)) * x[i]
                    lhs = sum(y[p] for p in present)
                    # x_i · (Σ_{j∈c} x_j − M_c) = 0, linearized; an inequality where pairs are missing
                    model.rlt.add(lhs == rhs if len(present) == len(others) else lhs <= rhs)

        lin = problem.linear + np.diag(Q)
        expr = float(problem.offset) + sum(float(lin[i]) * x[i] for i in range(n) if lin[i] != 0)
        expr = expr + sum(2.0 * float(Q[i, j]) * y[i, j] for i, j in pairs)
        model.obj = pyo.Objective(expr=expr, sense=pyo.minimize)
        return model, pairs

    @staticmethod
    def _warm_start(problem: BinaryQuadraticProblem, model: Any, pairs: list[tuple[int, int]]) -> None:
        """Greedy feasible start: repair the all-zero vector, then a swap descent (see :mod:`.repair`)."""
        x0, _ = repair(problem, np.zeros((1, problem.num_variables), dtype=np.int8))
        x0 = swap_descent(problem, x0)[0]
        for i in range(problem.num_variables):
            model.x[i].set_value(int(x0[i]))
        for i, j in pairs:
            model.y[i, j].set_value(int(x0[i] * x0[j]))

    @staticmethod
    def _add_no_good(pyo: Any, model: Any, x: np.ndarray) -> None:
        """Cut off exactly the vector ``x``: its Hamming distance to the next solution is at least 1."""
        if not hasattr(model, "no_good"):
            model.no_good = pyo.ConstraintList()
        ones = [i for i in range(len(x)) if x[i]]
        zeros = [i for i in range(len(x)) if not x[i]]
        model.no_good.add(sum(1 - model.x[i] for i in ones) + sum(model.x[i] for i in zeros) >= 1)


def _band_rlt(rows: Any, c: Any, x: Any, y: Any, have: set[tuple[int, int]], n: int) -> None:
    """The RLT cuts of a band (module docstring): ``L·x_i ≤ Σ_{j≠i} w_j y_ij + [i∈c] w_i x_i ≤ U·x_i``."""
    weight = dict(zip(c.indices, (float(w) for w in c.weight_array())))
    nonneg = all(w >= 0 for w in weight.values())
    for i in range(n):
        others = [j for j in c.indices if j != i]
        present = [(j, (min(i, j), max(i, j))) for j in others if (min(i, j), max(i, j)) in have]
        if not present:
            continue
        lhs = sum(weight[j] * y[p] for j, p in present) + weight.get(i, 0.0) * x[i]
        complete = len(present) == len(others)
        if c.upper is not None and (complete or nonneg):
            rows.add(lhs <= float(c.upper) * x[i])
        if c.lower is not None and complete:
            rows.add(lhs >= float(c.lower) * x[i])


def highs(highs_mod: Any, *, verbose: bool, mip_gap: float, seed: int | None, abs_gap: float) -> Any:
    """Pyomo's persistent HiGHS interface, checked to work and set up to return without loading a solution."""
    opt = highs_mod.Highs()
    if not opt.available():
        raise LmshrinkError("The 'milp' solver found Pyomo but not a working HiGHS: pip install 'lmshrink[milp]'")
    opt.config.stream_solver = bool(verbose)
    opt.config.load_solution = False
    opt.config.mip_gap = float(mip_gap)
    opt.highs_options = {"random_seed": int(seed or 0) % (2**31 - 1), "mip_abs_gap": float(abs_gap)}
    return opt


def ranked_solves(opt: Any, model: Any, *, count: int, time_limit: float | None, start: float, scale: float,
                  read: Any, exclude: Any, name: str, what: str,
                  infeasible: str | None = None) -> tuple[list[np.ndarray], dict[str, Any]]:
    """The ``count`` best solutions of a Pyomo ``model`` with HiGHS (``opt``, from :func:`highs`): solve, read the
    state, cut it off with a no-good cut, solve again, while each solve is proven optimal.

    ``read()`` returns (state, choice) from the loaded solution; ``exclude(choice)`` adds the cut. Objective values
    are reported times ``scale`` (the unit the model's objective was divided by). ``name`` and ``what`` word the
    errors ("'milp' found no feasible allocation …"); ``infeasible``, when given, is raised for an infeasible
    first solve (otherwise an infeasible solve ends the search). Returns the states and the solves' facts.
    """
    article = "an" if what[:1] in "aeiou" else "a"
    states: list[np.ndarray] = []
    info: dict[str, Any] = {"optimal": True, "solves": []}
    for k in range(count):
        if time_limit is not None:
            left = time_limit - (time.perf_counter() - start)
            if left <= 0:
                break
            opt.config.time_limit = max(left, 0.01)
        res = opt.solve(model)
        term = str(res.termination_condition).rsplit(".", 1)[-1]
        if term == "infeasible":
            if k == 0 and infeasible is not None:
                raise LmshrinkError(infeasible)
            break
        primal, bound = res.best_feasible_objective, res.best_objective_bound
        if primal is None:
            if k == 0:
                raise LmshrinkError(f"{name!r} found no feasible {what} before stopping ({term}).")
            break
        res.solution_loader.load_vars()
        state, choice = read()
        states.append(state)
        proven = term == "optimal"
        gap = None if bound is None else abs(primal - bound) / max(abs(primal), 1e-10)
        info["solves"].append({"termination": term, "objective": primal * scale,
                               "bound": None if bound is None else bound * scale, "gap": gap})
        if k == 0:
            info.update(optimal=proven, gap=gap, objective=primal * scale,
                        bound=None if bound is None else bound * scale)
        if not proven:
            break
        exclude(choice)
    if not states:
        raise LmshrinkError(f"{name!r} stopped before finding {article} {what}; raise the time limit.")
    return states, info
