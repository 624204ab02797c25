"""``lmshrink plugins``: every solver, objective, removal method, adapter and command, with the package that provides
it; solvers with their aliases, problem types and capabilities; and installed plugins that did not load."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..plugins import PLUGINS_ENV, broken_plugins, loaded_plugins, registry
from . import Command


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _rows() -> list[dict[str, Any]]:
    rows = []
    for kind in ("solver", "objective", "method", "adapter", "command"):
        for e in registry(kind):
            row = {"kind": kind, "name": e.name, "package": e.package, "version": e.version,
                   "aliases": list(e.aliases), "solves": ", ".join(_problem_label(t) for t in e.problem_types),
                   "description": e.description}
            if kind == "solver":
                row["capabilities"] = e.create().capabilities.to_dict()
            rows.append(row)
    return rows


def _problems() -> list[dict[str, str]]:
    """Installed plugins that were skipped, left out by LMSHRINK_PLUGINS, or implement unknown hooks."""
    loaded = loaded_plugins()
    rows = [{"status": "broken", **vars(p)} for p in broken_plugins()]
    rows += [{"status": "unknown hook", **vars(p)} for p in loaded.unknown_hooks]
    rows += [{"status": f"not loaded ({PLUGINS_ENV})", **vars(p)} for p in loaded.not_selected]
    return rows


def _run(args: argparse.Namespace) -> int:
    rows = _rows()
    problems = _problems()
    if args.json:
        print(json.dumps(rows + [{"kind": "problem", **p} for p in problems], indent=1))
        return 0
    widths = [max(len(r[k]) for r in rows) for k in ("kind", "name", "package", "version")]
    for r in rows:
        cells = [r[k].ljust(w) for k, w in zip(("kind", "name", "package", "version"), widths)]
        description = f"[{r['solves']}] {r['description']}" if r["solves"] else r["description"]
        if r["aliases"]:
            description += f" (also: {', '.join(r['aliases'])})"
        print("  ".join(cells), " ", description)
    for p in problems:
        print(f"{p['status']}  {p['entry_point']}  {p['distribution']} {p['version']}  {p['error']}".rstrip())
    return 0


def _problem_label(problem_type: type) -> str:
    """``BinaryQuadraticProblem`` → ``binary``, ``RankAllocationProblem`` → ``rank``."""
    label = getattr(problem_type, "label", None) or problem_type.__name__.removesuffix("Problem")
    return {"BinaryQuadratic": "binary", "RankAllocation": "rank"}.get(label, label)


COMMAND = Command("plugins", "List installed solvers, objectives, removal methods, adapters and commands.", _add_arguments, _run)
