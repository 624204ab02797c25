"""``lmshrink solve PROBLEM --solver NAME``: solve a saved problem file, no model loaded."""

from __future__ import annotations

import argparse
import json

from . import Command


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("problem", help="problem file (.json or .npz) written by lmshrink")
    parser.add_argument("--solver", default="exact", help="solver name (see `lmshrink plugins`); default: exact")
    parser.add_argument("--top-k", type=int, default=5, help="number of distinct lowest-energy solutions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=None, help="seconds, for solvers that take one")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="solver option")
    parser.add_argument("--json", action="store_true", help="print the solutions as JSON")


def _run(args: argparse.Namespace) -> int:
    from ..core import load_problem
    from ..core.options import parse_option_strings
    from ..plugins import get_solver

    problem = load_problem(args.problem)
    solver = get_solver(args.solver, problem)
    options = parse_option_strings(f"Solver {solver.name!r}", solver.options, args.option)
    result = solver.solve(problem, num_solutions=args.top_k, seed=args.seed, time_limit=args.time_limit, **options)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1, default=str))
        return 0
    print(f"{problem!r} solved by {result.solver} in {result.time_s:.3f} s")
    for rank, sol in enumerate(result, 1):
        print(f"{rank:3d}  energy {sol.energy:.6g}  {problem.describe(sol.x)}")
    return 0


COMMAND = Command("solve", "Solve a saved problem file with any solver, without loading a model.", _add_arguments, _run)
