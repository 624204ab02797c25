"""Hook specifications. A plugin implements any of these with ``@lmshrink.hookimpl``.

Each hook receives a ``register`` callable; call it once per thing the plugin provides::

    @hookimpl
    def lmshrink_register_solvers(register):
        register(MySolver)            # a Solver subclass; its ``name`` is the registry key
        register("my_package.solvers:OtherSolver", name="other")  # imported on first use
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("lmshrink")
hookimpl = pluggy.HookimplMarker("lmshrink")

Register = Callable[[Any], None]


@hookspec
def lmshrink_register_solvers(register: Register) -> None:
    """Register :class:`lmshrink.core.Solver` subclasses."""


@hookspec
def lmshrink_register_objectives(register: Register) -> None:
    """Register :class:`lmshrink.core.Objective` subclasses."""


@hookspec
def lmshrink_register_adapters(register: Register) -> None:
    """Register :class:`lmshrink.core.ArchitectureAdapter` subclasses."""


@hookspec
def lmshrink_register_commands(register: Register) -> None:
    """Register :class:`lmshrink.cli.Command` objects: subcommands of the ``lmshrink`` command line."""


@hookspec
def lmshrink_register_methods(register: Register) -> None:
    """Register :class:`lmshrink.core.RemovalMethod` subclasses: removal procedures that choose blocks
    themselves (iterative or greedy baselines) instead of posing a problem for a solver."""
