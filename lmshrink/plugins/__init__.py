"""Plugins: hook specifications, the plugin manager and lookups by name."""

from __future__ import annotations

from typing import Any

from ..core.errors import LmshrinkError
from .hookspecs import hookimpl, hookspec
from .manager import (
    ENTRY_POINT_GROUP,
    PLUGINS_ENV,
    PluginProblem,
    PluginWarning,
    broken_plugins,
    build_registry,
    loaded_plugins,
    plugin_manager,
    registry,
    reset,
)
from .registry import Entry, Registry


def get_solver(name: str, problem: Any = None) -> Any:
    """A new instance of the solver called ``name``: its canonical name, or an alias it has for ``problem``'s type
    (``problem`` is an instance or a problem class; without it, the canonical name or an unambiguous alias)."""
    if problem is None:
        return registry("solver").create(name)
    return registry("solver").for_problem(name, problem)


def get_objective(name: str) -> Any:
    """A new instance of the objective called ``name``."""
    return registry("objective").create(name)


def get_adapter(name: str) -> Any:
    """A new instance of the adapter called ``name``."""
    return registry("adapter").create(name)


def find_adapter(model: Any) -> Any:
    """The first registered adapter that matches ``model``, or an error naming the supported ones."""
    adapters = registry("adapter")
    for entry in adapters:
        adapter = entry.obj()
        if adapter.matches(model):
            return adapter
    arch = type(model).__name__
    supported = "; ".join(f"{e.name} ({e.description})" for e in adapters)
    raise LmshrinkError(
        f"No adapter supports {arch}. Supported: {supported}. To add one, write an ArchitectureAdapter subclass "
        "and register it from a plugin with the lmshrink_register_adapters hook (docs: Write a plugin, 'Adding an architecture')."
    )


__all__ = [
    "ENTRY_POINT_GROUP",
    "Entry",
    "PLUGINS_ENV",
    "PluginProblem",
    "PluginWarning",
    "Registry",
    "broken_plugins",
    "build_registry",
    "find_adapter",
    "get_adapter",
    "get_objective",
    "get_solver",
    "hookimpl",
    "hookspec",
    "loaded_plugins",
    "plugin_manager",
    "registry",
    "reset",
]
