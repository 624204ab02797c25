"""The plugin manager: built-ins plus every package that declares the ``lmshrink`` entry-point group.

Loading cannot take lmshrink down: a plugin whose module fails to import, or whose hooks do not fit their
specifications, is skipped with one warning naming its distribution and entry point and listed as broken
(:func:`broken_plugins`, ``lmshrink plugins``); a hook implementation whose name matches no specification (a
misspelling) is reported as a warning naming the plugin (pluggy's ``check_pending``). The environment variable
``LMSHRINK_PLUGINS`` selects which installed plugins load: a comma-separated list of distribution or entry-point
names; empty means the built-ins only; unset means every installed plugin.
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pluggy

from .. import __version__
from ..core.errors import did_you_mean
from . import builtins, hookspecs
from .registry import Registry

ENTRY_POINT_GROUP = "lmshrink"
#: environment variable: which installed plugins load (see the module docstring)
PLUGINS_ENV = "LMSHRINK_PLUGINS"

_HOOKS = {
    "solver": "lmshrink_register_solvers",
    "objective": "lmshrink_register_objectives",
    "adapter": "lmshrink_register_adapters",
    "command": "lmshrink_register_commands",
    "method": "lmshrink_register_methods",
}


class PluginWarning(UserWarning):
    """A plugin was skipped or implements a hook lmshrink does not have."""


@dataclass(frozen=True)
class PluginProblem:
    """A plugin lmshrink could not use (or not fully): where it comes from and what went wrong."""

    distribution: str
    version: str
    entry_point: str
    error: str


@dataclass
class LoadedPlugins:
    """The plugin manager and what loading found out about the installed plugins."""

    pm: pluggy.PluginManager
    #: plugin object → (distribution, version)
    provided_by: dict[int, tuple[str, str]] = field(default_factory=dict)
    #: plugins skipped because they failed to load or register
    broken: list[PluginProblem] = field(default_factory=list)
    #: plugins left out by LMSHRINK_PLUGINS
    not_selected: list[PluginProblem] = field(default_factory=list)
    #: hooks implemented under a name no specification has
    unknown_hooks: list[PluginProblem] = field(default_factory=list)

    def skip(self, problem: PluginProblem, why: str) -> None:
        self.broken.append(problem)
        warnings.warn(f"lmshrink: skipped plugin {problem.entry_point!r} of {problem.distribution} {problem.version} "
                      f"({why}): {problem.error}", PluginWarning, stacklevel=3)


def _version() -> str:
    return __version__


def _selected() -> set[str] | None:
    """The names LMSHRINK_PLUGINS lets load (None: every plugin)."""
    value = os.environ.get(PLUGINS_ENV)
    if value is None:
        return None
    return {v.strip().lower() for v in value.split(",") if v.strip()}


def _load_entry_points(loaded: LoadedPlugins) -> None:
    pm, wanted = loaded.pm, _selected()
    for dist in importlib.metadata.distributions():
        dist_name = dist.metadata["name"] or "?"
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or pm.get_plugin(ep.name) is not None:
                continue
            where = PluginProblem(dist_name, dist.version, ep.name, "")
            if wanted is not None and ep.name.lower() not in wanted and dist_name.lower() not in wanted:
                loaded.not_selected.append(where)
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure of a third party's module
                loaded.skip(PluginProblem(dist_name, dist.version, ep.name, f"{type(exc).__name__}: {exc}"),
                            f"importing {ep.value} failed")
                continue
            try:
                pm.register(plugin, name=ep.name)
            except Exception as exc:  # noqa: BLE001 - pluggy's validation of the hook signatures, a clash
                loaded.skip(PluginProblem(dist_name, dist.version, ep.name, f"{type(exc).__name__}: {exc}"),
                            "its hooks do not fit lmshrink's")
                continue
            loaded.provided_by[id(plugin)] = (dist_name, dist.version)


def _check_hooks(loaded: LoadedPlugins) -> None:
    """pluggy's ``check_pending``, reported per plugin as a warning instead of an exception."""
    pm = loaded.pm
    try:
        pm.check_pending()
        return
    except pluggy.PluginValidationError:
        pass
    known = [name for name in vars(pm.hook) if getattr(pm.hook, name).has_spec()]
    for name, caller in vars(pm.hook).items():
        if caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.optionalhook:
                continue
            dist, version = loaded.provided_by.get(id(impl.plugin), (impl.plugin_name, "unknown"))
            problem = PluginProblem(dist, version, impl.plugin_name, f"implements {name!r}, which is no lmshrink hook")
            loaded.unknown_hooks.append(problem)
            warnings.warn(f"lmshrink: plugin {impl.plugin_name!r} of {dist} {version} implements {name!r}, which is "
                          f"no lmshrink hook and is ignored.{did_you_mean(name, known)}", PluginWarning, stacklevel=3)


@lru_cache(maxsize=1)
def loaded_plugins() -> LoadedPlugins:
    """The process-wide plugin manager (built-ins registered, selected entry points loaded) and what loading found."""
    pm = pluggy.PluginManager("lmshrink")
    pm.add_hookspecs(hookspecs)
    loaded = LoadedPlugins(pm)
    pm.register(builtins, name=builtins.__name__)
    loaded.provided_by[id(builtins)] = ("lmshrink", _version())
    _load_entry_points(loaded)
    _check_hooks(loaded)
    return loaded


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (built-ins registered, entry points loaded)."""
    return loaded_plugins().pm


def broken_plugins() -> list[PluginProblem]:
    """Installed plugins that were skipped because they failed to load, register or run their hooks."""
    registry("solver"), registry("objective"), registry("adapter"), registry("command"), registry("method")
    return list(loaded_plugins().broken)


def _provider(loaded: LoadedPlugins, plugin: Any) -> tuple[str, str]:
    if id(plugin) in loaded.provided_by:
        return loaded.provided_by[id(plugin)]
    for plug, dist in loaded.pm.list_plugin_distinfo():  # a manager that loaded entry points itself
        if plug is plugin:
            return dist.metadata["name"], dist.version
    name = getattr(plugin, "__name__", type(plugin).__name__)
    if name.split(".")[0] == "lmshrink":
        return "lmshrink", _version()
    return name, "unknown"


def build_registry(kind: str, pm: pluggy.PluginManager | None = None) -> Registry:
    """Call every implementation of the ``kind`` hook and collect what they register.

    A third-party implementation that raises (or registers something the registry refuses) is skipped with a
    warning and listed by :func:`broken_plugins`; a built-in one that raises is a bug and raises.
    """
    loaded = loaded_plugins() if pm is None or pm is plugin_manager() else LoadedPlugins(pm)
    registry = Registry(kind)
    caller = getattr(loaded.pm.hook, _HOOKS[kind])
    for impl in caller.get_hookimpls():  # registration order
        package, version = _provider(loaded, impl.plugin)

        def register(obj: Any, name: str | None = None, aliases: tuple[str, ...] = (), _p: str = package,
                     _v: str = version) -> None:
            registry.add(obj, package=_p, version=_v, name=name, aliases=aliases)

        if package == "lmshrink":
            impl.function(register=register)
            continue
        try:
            impl.function(register=register)
        except Exception as exc:  # noqa: BLE001 - a third party's hook must not take lmshrink down
            loaded.skip(PluginProblem(package, version, impl.plugin_name, f"{type(exc).__name__}: {exc}"),
                        f"its {_HOOKS[kind]} hook failed")
    return registry


@lru_cache(maxsize=None)
def registry(kind: str) -> Registry:
    """The cached registry of ``kind`` ("solver", "objective", "adapter", "command" or "method")."""
    return build_registry(kind)


def reset() -> None:
    """Forget the cached manager and registries (after installing a plugin at run time, and in tests)."""
    loaded_plugins.cache_clear()
    registry.cache_clear()
