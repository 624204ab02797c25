"""``lmshrink plugins``: every solver, objective, removal method, adapter and command, with the package that provides it."""

from __future__ import annotations

import argparse
import json

from . import Command


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _run(args: argparse.Namespace) -> int:
    from ..plugins import registry

    rows = []
    for kind in ("solver", "objective", "method", "adapter", "command"):
        for e in registry(kind):
            solves = ", ".join(_problem_label(t) for t in e.problem_types)
            rows.append({"kind": kind, "name": e.name, "package": e.package, "version": e.version,
                         "solves": solves, "description": e.description})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    widths = [max(len(r[k]) for r in rows) for k in ("kind", "name", "package", "version")]
    for r in rows:
        cells = [r[k].ljust(w) for k, w in zip(("kind", "name", "package", "version"), widths)]
        description = f"[{r['solves']}] {r['description']}" if r["solves"] else r["description"]
        print("  ".join(cells), " ", description)
    return 0


def _problem_label(problem_type: type) -> str:
    """``BinaryQuadraticProblem`` → ``binary``, ``RankAllocationProblem`` → ``rank``."""
    return getattr(problem_type, "label", None) or problem_type.__name__.removesuffix("Problem")


COMMAND = Command("plugins", "List installed solvers, objectives, removal methods, adapters and commands.", _add_arguments, _run)
