"""``lmshrink plugins``: every solver, objective, adapter and command, with the package that provides it."""

from __future__ import annotations

import argparse
import json

from . import Command


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _run(args: argparse.Namespace) -> int:
    from ..plugins import registry

    rows = []
    for kind in ("solver", "objective", "adapter", "command"):
        for e in registry(kind):
            rows.append({"kind": kind, "name": e.name, "package": e.package, "version": e.version,
                         "description": e.description})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    widths = [max(len(r[k]) for r in rows) for k in ("kind", "name", "package", "version")]
    for r in rows:
        cells = [r[k].ljust(w) for k, w in zip(("kind", "name", "package", "version"), widths)]
        print("  ".join(cells), " ", r["description"])
    return 0


COMMAND = Command("plugins", "List installed solvers, objectives, adapters and commands.", _add_arguments, _run)
