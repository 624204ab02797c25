"""``lmshrink solve PROBLEM --solver NAME``: solve a saved problem file, no model loaded."""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from ..core import load_problem
from ..core.options import parse_option_strings
from ..core.solver import check_run_arguments
from ..experiments.record import record_run
from ..plugins import get_solver
from . import Command


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("problem", help="problem file (.json or .npz) written by lmshrink; weighted bands (parameter "
                                        "budgets) go to solvers that honour them (exact, anneal, milp, tabu, dwave, "
                                        "dwave-hybrid)")
    parser.add_argument("--solver", default="exact", help="solver name (see `lmshrink plugins`); default: exact")
    parser.add_argument("--top-k", type=int, default=5, help="number of distinct lowest-energy solutions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=None, help="seconds, for solvers that take one")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="solver option")
    parser.add_argument("--json", action="store_true", help="print the solutions as JSON")
    parser.add_argument("--record", default=None, metavar="DIR",
                        help="write an experiment record (problem, options, raw samples, embedding, timing, ...) "
                             "to this new folder; 'lmshrink show DIR' summarises it")


def _run(args: argparse.Namespace) -> int:
    check_run_arguments(args.top_k, args.seed, args.time_limit)
    problem = load_problem(args.problem)
    solver = get_solver(args.solver, problem)
    options = parse_option_strings(f"Solver {solver.name!r}", solver.options, args.option)
    if args.record:
        result, _ = record_run(problem, solver, args.record, num_solutions=args.top_k, seed=args.seed,
                               time_limit=args.time_limit, options=options, problem_source=args.problem)
    else:
        result = solver.solve(problem, num_solutions=args.top_k, seed=args.seed, time_limit=args.time_limit,
                              **options)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1, default=str))
        return 0
    print(f"{problem!r} solved by {result.solver} in {result.time_s:.3f} s")
    for rank, sol in enumerate(result, 1):
        print(f"{rank:3d}  energy {sol.energy:.6g}  {problem.describe(sol.x)}")
    for line in describe_bands(problem, result) + describe_run(result, solver):
        print(line)
    if args.record:
        print(f"recorded in {args.record} ('lmshrink show {args.record}')")
    return 0


def describe_bands(problem: Any, result: Any) -> list[str]:
    """One line per weighted band (a parameter budget): the best solution's weighted sum and the band."""
    lines = []
    for k, c in enumerate(getattr(problem, "constraints", ())):
        if c.is_cardinality or not len(result):
            continue
        total = float(c.activity(np.asarray(result.best.x)[None, :])[0])
        lo = "-inf" if c.lower is None else f"{c.lower:,.6g}"
        hi = "inf" if c.upper is None else f"{c.upper:,.6g}"
        lines.append(f"band {c.name or k}: best has Σw·x = {total:,.6g} in [{lo}, {hi}]")
    return lines


def describe_run(result: Any, solver: Any) -> list[str]:
    """Plain-text lines saying what the JSON says about a run: proof and gap, time limit, raw samples next to what
    repair and polish made of them, the penalty weight, an offline mock, variables fixed classically."""
    info = result.info
    lines = []
    if result.proven_optimal:
        top = " (and the listed ones are the lowest, in order)" if info.get("optimal_top_k", True) and \
            len(result) > 1 else ""
        lines.append(f"proof: the best is proven optimal{top}")
    elif solver.capabilities.proves_optimality:
        gap = info.get("gap")
        lines.append("proof: none, the best is not proven optimal" + (f" (relative gap {gap:.3g})" if gap else ""))
    else:
        lines.append("proof: none (a heuristic solver)")
    if result.stopped_early:
        lines.append("stopped early: the time limit ended the run")
    raw = result.raw
    if raw is not None:
        best = "none feasible" if raw.best_energy is None else f"best feasible {raw.best_energy:.6g}"
        steps = ", ".join(solver.capabilities.postprocessing)
        made = []
        if "num_repaired" in info:
            made.append(f"{info['num_repaired']} repaired")
        if "num_polished" in info:
            made.append(f"{info['num_polished']} improved by polish")
        lines.append(f"raw samples: {raw.num_samples}, {raw.feasible_fraction:.0%} feasible, {best}"
                     + (f" (before {steps}: {', '.join(made)})" if steps and made else ""))
    if "penalty" in info:
        lines.append(f"penalty weight: {info['penalty']:.6g} ({info.get('penalty_rule', 'given')})")
    if info.get("mock") or info.get("note"):
        lines.append(f"note: {info.get('note', 'offline mock')}")
    if info.get("fixed_variables"):
        fixed = ", ".join(f"{k}={v}" for k, v in info["fixed_variables"].items())
        lines.append(f"fixed classically: {len(info['fixed_variables'])} variables ({fixed})")
        reduction = info.get("reduction")
        if reduction and raw is not None:
            own = "none feasible" if raw.best_energy is None else f"{raw.best_energy:.6g}"
            lines.append(f"classical pre-solve ({reduction['classical_solver']}) best energy "
                         f"{reduction['classical_best_energy']:.6g}; {result.solver}'s own best {own}")
    return lines


COMMAND = Command("solve", "Solve a saved problem file with any solver, without loading a model.", _add_arguments, _run)
