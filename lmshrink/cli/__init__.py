"""The ``lmshrink`` command line. Subcommands are plugins registered through ``lmshrink_register_commands``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

from .. import __version__
from ..core.errors import LmshrinkError
from ..pipeline.settings import PlacementSettings, SavedModelSettings
from ..plugins import registry
from .flags import add_settings_arguments


@dataclass(frozen=True)
class Command:
    """One subcommand: ``add_arguments(parser)`` declares its flags, ``run(args)`` does the work (returns exit code)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


def add_placement_arguments(p: argparse.ArgumentParser, *, save: bool = True) -> None:
    """``--device``, ``--dtype``, ``--device-map`` and (with ``save``) ``--save-dtype``, shared by the commands that
    load a model; checked by :func:`lmshrink.devices.resolve_placement` before it loads."""
    add_settings_arguments(p, PlacementSettings)
    if save:
        add_settings_arguments(p, SavedModelSettings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmshrink",
        description="Compress language models by solving each compression decision as an optimization problem.",
    )
    parser.add_argument("--version", action="version", version=f"lmshrink {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for entry in registry("command"):
        cmd: Command = entry.obj
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lmshrink`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except LmshrinkError as exc:
        print(f"lmshrink: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmshrink: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
