"""``lmshrink sweep PROBLEM --solver NAME --grid KEY=V1,V2 ...``: a parameter sweep under a QPU-time budget."""

from __future__ import annotations

import argparse
import json

from ..core import load_problem
from ..core.solver import check_run_arguments
from ..experiments.sweep import parse_grid, run_sweep, sweep_summary, sweep_table
from ..plugins import get_solver
from . import Command


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("problem", help="problem file (.json or .npz) written by lmshrink")
    parser.add_argument("--solver", required=True, help="solver name, e.g. dwave or qaoa")
    parser.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2,...",
                        help="option values to sweep, e.g. chain_strength=1,2,annealing_time=20,50 (repeatable)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a solver option shared by every point")
    parser.add_argument("--budget-qpu-seconds", type=float, default=None, metavar="S",
                        help="stop before a point whose estimated QPU (device) time exceeds what is left")
    parser.add_argument("--dry-run", action="store_true",
                        help="estimate every point's QPU time on the offline stand-in (mock D-Wave sampler, fake "
                             "IBM device); nothing is sampled or submitted")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="folder for the records and sweep.json (default ./lmshrink-out/<timestamp>; a dry run "
                             "writes only with --out)")
    parser.add_argument("--top-k", type=int, default=5, help="distinct solutions kept per point")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=None,
                        help="energy that counts as success (default: the proven optimum when the problem is small, "
                             "else the best any point found)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")


def _run(args: argparse.Namespace) -> int:
    check_run_arguments(args.top_k, args.seed, None)
    grid = parse_grid(args.grid)
    problem = load_problem(args.problem)
    solver = get_solver(args.solver, problem)
    result = run_sweep(problem, solver, grid, base=args.option, budget_qpu_seconds=args.budget_qpu_seconds,
                       dry_run=args.dry_run, out=args.out, seed=args.seed, num_solutions=args.top_k,
                       target=args.target, problem_source=args.problem, progress=not args.quiet)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1, default=str))
        return 0
    print(sweep_table(result))
    for line in sweep_summary(result):
        print(line)
    if result.out:
        print(f"wrote {result.out}/sweep.json" + ("" if result.dry_run else f" and one record per point "
                                                                            f"('lmshrink show {result.out}')"))
    return 0


COMMAND = Command("sweep", "Sweep solver options over a grid within a QPU-time budget; --dry-run estimates it.",
                  _add_arguments, _run)
