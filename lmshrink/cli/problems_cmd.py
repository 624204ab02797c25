"""``lmshrink problems list|export|build``: the problem library (real block-removal problems with known optima)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from ..core import LmshrinkError
from ..library import load_library
from ..library.formats import check_format, export_library, problem_instance
from ..report import markdown_table
from . import Command


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    ls = sub.add_parser("list", help="the instances of a library with size, constraints and reference energy",
                        description="List the instances of a library (default: the set shipped in the package).")
    ls.add_argument("--from", dest="source", default=None, metavar="DIR", help="library folder (default: shipped)")
    ls.add_argument("--json", action="store_true", help="print the rows as JSON")

    ex = sub.add_parser("export", help="write library instances in a solver format",
                        description="Write library instances (or your own problem files, --problem) as lmshrink, dimod BQM/CQM, LP/MPS (linearized MILP "
                                    "through Pyomo) or QPLIB files, with index.json (reference energies, lowest "
                                    "states and their measured values).")
    ex.add_argument("out", metavar="DIR", help="output folder")
    ex.add_argument("--format", dest="fmt", default="lmshrink", help="lmshrink, bqm, cqm, lp, mps or qplib")
    ex.add_argument("--from", dest="source", default=None, metavar="DIR", help="library folder (default: shipped)")
    ex.add_argument("--only", nargs="+", default=None, metavar="NAME", help="instance names (default: all)")
    ex.add_argument("--problem", nargs="+", default=None, metavar="FILE",
                    help="export these problem files (.json/.npz, e.g. one with a parameter budget) instead of "
                         "library instances")

    bd = sub.add_parser("build", help="regenerate the reference set from the models (slow; resumable)",
                        description="Build the reference set: SmolLM2 layer and sub-layer problems (fisher, "
                                    "fisher-fo, pairs; M = 4…12) and random-weight Nemotron-H problems, each with "
                                    "its proven or best known optimum, lowest states and their measured loss and "
                                    "perplexity. One file per instance; finished ones are skipped.")
    bd.add_argument("--out", default="lmshrink-library", help="output folder (default: ./lmshrink-library)")
    bd.add_argument("--only", nargs="+", default=None, metavar="PATTERN",
                    help="build the instances whose name contains one of these")
    bd.add_argument("--shipped", action="store_true",
                    help="build only the small set shipped in the package (with --out lmshrink/library/data to "
                         "refresh it)")
    bd.add_argument("--list", dest="list_only", action="store_true", help="print the instance names and stop")
    bd.add_argument("--milp-time", type=float, default=None, help="seconds of milp per large instance (120)")
    bd.add_argument("--top", type=int, default=None, help="lowest states per instance (20)")
    bd.add_argument("--force", action="store_true", help="rebuild instances that already exist")
    bd.add_argument("--quiet", action="store_true", help="no progress messages")


def _run(args: argparse.Namespace) -> int:
    return {"list": _list, "export": _export, "build": _build}[args.action](args)


def _list(args: argparse.Namespace) -> int:
    rows = [inst.summary() for inst in load_library(args.source)]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(markdown_table(["instance", "N", "constraints", "energy", "proven", "solver", "time s", "states",
                          "measured"],
                         [[r["instance"], r["variables"], r["constraints"], r["energy"],
                           "yes" if r["proven"] else "best known", r["solver"], r["time_s"], r["lowest"],
                           "pending" if r["pending"] else "yes" if r["measured"] else "no"] for r in rows]))
    return 0


def _export(args: argparse.Namespace) -> int:
    check_format(args.fmt)
    if args.problem and (args.only or args.source):
        raise LmshrinkError("Give either --problem FILE (your own problems) or library instances (--only, --from), "
                            "not both.")
    instances = [problem_instance(p) for p in args.problem] if args.problem else load_library(args.source, args.only)
    paths = export_library(instances, args.out, args.fmt)
    print(f"wrote {len(instances)} instance(s) as {args.fmt} to {args.out} ({len(paths)} files, index.json)")
    return 0


def _build(args: argparse.Namespace) -> int:
    from ..library.build import SHIPPED, BuildSettings, build_library, reference_specs, select_specs

    specs = select_specs(reference_specs(), args.only)
    if args.shipped:
        specs = [s for s in specs if s.name in SHIPPED]
        if not specs:
            raise LmshrinkError("None of the --only patterns matches an instance of the shipped set: "
                                f"{', '.join(SHIPPED)}.")
    if args.list_only:
        for s in specs:
            print(s.name)
        return 0
    settings = BuildSettings()
    if args.milp_time is not None:
        if args.milp_time <= 0:
            raise LmshrinkError(f"--milp-time must be a positive number of seconds, not {args.milp_time}.")
        settings = replace(settings, milp_time=args.milp_time)
    if args.top is not None:
        if args.top < 1:
            raise LmshrinkError(f"--top must be at least 1, not {args.top}.")
        settings = replace(settings, top=args.top)
    paths = build_library(args.out, specs, settings=settings, force=args.force, progress=not args.quiet)
    print(f"{len(paths)} instance(s) in {args.out}")
    return 0


COMMAND = Command("problems", "The problem library: list, export in solver formats, or build the reference set.",
                  _add_arguments, _run)
