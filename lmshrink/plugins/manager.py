"""The plugin manager: built-ins plus every package that declares the ``lmshrink`` entry-point group."""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any

import pluggy

from . import hookspecs
from .builtins import BUILTIN_MODULES
from .registry import Registry

ENTRY_POINT_GROUP = "lmshrink"

_HOOKS = {
    "solver": "lmshrink_register_solvers",
    "objective": "lmshrink_register_objectives",
    "adapter": "lmshrink_register_adapters",
    "command": "lmshrink_register_commands",
    "method": "lmshrink_register_methods",
}


def _version() -> str:
    from .. import __version__

    return __version__


@lru_cache(maxsize=1)
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (built-ins registered, entry points loaded)."""
    pm = pluggy.PluginManager("lmshrink")
    pm.add_hookspecs(hookspecs)
    for module in BUILTIN_MODULES:
        pm.register(importlib.import_module(module), name=module)
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    return pm


def _provider(pm: pluggy.PluginManager, plugin: Any) -> tuple[str, str]:
    for plug, dist in pm.list_plugin_distinfo():
        if plug is plugin:
            return dist.metadata["name"], dist.version
    name = getattr(plugin, "__name__", type(plugin).__name__)
    if name.split(".")[0] == "lmshrink":
        return "lmshrink", _version()
    return name, "unknown"


def build_registry(kind: str, pm: pluggy.PluginManager | None = None) -> Registry:
    """Call every implementation of the ``kind`` hook and collect what they register."""
    pm = pm or plugin_manager()
    registry = Registry(kind)
    caller = getattr(pm.hook, _HOOKS[kind])
    for impl in caller.get_hookimpls():  # registration order
        package, version = _provider(pm, impl.plugin)

        def register(obj: Any, name: str | None = None, _p: str = package, _v: str = version) -> None:
            registry.add(obj, package=_p, version=_v, name=name)

        impl.function(register=register)
    return registry


@lru_cache(maxsize=None)
def registry(kind: str) -> Registry:
    """The cached registry of ``kind`` ("solver", "objective", "adapter" or "command")."""
    return build_registry(kind)


def reset() -> None:
    """Forget the cached manager and registries (after installing a plugin at run time, and in tests)."""
    plugin_manager.cache_clear()
    registry.cache_clear()
