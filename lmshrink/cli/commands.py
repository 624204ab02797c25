"""Registers lmshrink's built-in subcommands through the same hook a plugin uses."""

from __future__ import annotations

from typing import Any

from ..plugins import hookimpl


@hookimpl
def lmshrink_register_commands(register: Any) -> None:
    from . import (compress_cmd, eval_cmd, export_cmd, heal_cmd, plugins_cmd, problems_cmd, prune_cmd, show_cmd,
                   solve_cmd, svd_cmd, sweep_cmd)

    register(prune_cmd.COMMAND)
    register(solve_cmd.COMMAND)
    register(plugins_cmd.COMMAND)
    register(svd_cmd.COMMAND)
    register(eval_cmd.COMMAND)
    register(heal_cmd.COMMAND)
    register(problems_cmd.COMMAND)
    register(show_cmd.COMMAND)
    register(sweep_cmd.COMMAND)
    register(export_cmd.COMMAND)
    register(compress_cmd.COMMAND)
