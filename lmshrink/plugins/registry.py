"""A name → plugin registry with provider facts, aliases and "did you mean" errors.

An entry is either the plugin object itself or a lazy reference ``"module:attr"`` (as lm-evaluation-harness
registers its tasks), imported the first time something asks for the object, its description or its problem types.
Registering by reference keeps listing names, aliases and the command line's ``--help`` free of the plugins'
modules and of what they import.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import LmshrinkError, unknown_name


def is_reference(target: Any) -> bool:
    """Whether ``target`` is a lazy ``"module:attr"`` reference rather than the plugin object."""
    return isinstance(target, str) and ":" in target


def resolve(reference: str) -> Any:
    """The object a ``"module:attr"`` reference names (``attr`` may be dotted)."""
    module, _, attr = reference.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Entry:
    """One registered plugin (the object or a lazy ``"module:attr"`` reference to it), the distribution that
    provides it and the further names it answers to."""

    name: str
    target: Any
    package: str
    version: str
    aliases: tuple[str, ...] = ()
    _resolved: list[Any] = field(default_factory=list, repr=False, compare=False)

    @property
    def obj(self) -> Any:
        """The plugin object, imported on first use when it was registered by reference."""
        if not is_reference(self.target):
            return self.target
        if not self._resolved:
            self._resolved.append(resolve(self.target))
        return self._resolved[0]

    @property
    def loaded(self) -> bool:
        """Whether the object is at hand without importing anything."""
        return not is_reference(self.target) or bool(self._resolved)

    @property
    def description(self) -> str:
        doc = (getattr(self.obj, "description", "") or getattr(self.obj, "help", "")
               or getattr(self.obj, "__doc__", "") or "")
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @property
    def problem_types(self) -> tuple[type, ...]:
        return tuple(getattr(self.obj, "problem_types", ()))

    def create(self, *args: Any, **kwargs: Any) -> Any:
        """A new instance, carrying the registered (canonical) name where its class declares another."""
        obj = self.obj(*args, **kwargs)
        if getattr(obj, "name", self.name) != self.name:
            obj.name = self.name
        return obj

    def supports(self, problem: Any) -> bool:
        """Whether the plugin takes problems of ``problem``'s type (an instance or a problem class); whether it
        honours that instance's constraints is the solver's to say, in one sentence, when it is asked to solve."""
        kind = problem if isinstance(problem, type) else type(problem)
        return any(issubclass(kind, t) for t in self.problem_types)


class Registry:
    """Plugins of one kind (solver, objective, adapter, command, method) by unique canonical name.

    An entry may also answer to aliases. An alias may be shared by plugins of different problem types (``milp``
    names the binary solver ``milp`` and, for rank problems, ``rank-milp``): :meth:`for_problem` picks the one that
    supports a given problem, canonical names first.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, list[str]] = {}

    def add(self, obj: Any, *, package: str, version: str, name: str | None = None,
            aliases: tuple[str, ...] = ()) -> None:
        """Register ``obj`` (a plugin object, or a ``"module:attr"`` reference given with its ``name``)."""
        lazy = is_reference(obj)
        key = name or (None if lazy else getattr(obj, "name", None))
        if not key:
            raise LmshrinkError(f"A {self.kind} from {package} was registered without a name.")
        declared = () if lazy else getattr(obj, "aliases", ())
        names = tuple(dict.fromkeys(a for a in (*aliases, *declared) if a and a != key))
        entry = Entry(key, obj, package, version, names)
        if key in self._entries:
            if self._entries[key].target is obj or (lazy and self._entries[key].target == obj):
                return
            raise LmshrinkError(
                f"Two {self.kind}s are called {key!r}: one from {self._entries[key].package}, one from {package}."
            )
        self._entries[key] = entry
        for alias in names:
            self._aliases.setdefault(alias, []).append(key)
        try:
            for alias in names:  # a plugin object is checked now; references when the alias is first looked up
                self._check_alias(alias, loaded_only=lazy)
        except LmshrinkError:
            self._forget(key)
            raise

    def _forget(self, key: str) -> None:
        entry = self._entries.pop(key)
        for alias in entry.aliases:
            self._aliases[alias].remove(key)
            if not self._aliases[alias]:
                del self._aliases[alias]

    def _check_alias(self, alias: str, *, loaded_only: bool = False) -> None:
        """Refuse an alias that two entries share for the same problems (with ``loaded_only``, only among the
        entries whose objects are at hand)."""
        sharing = [self._entries[k] for k in self._aliases.get(alias, [])]
        if loaded_only:
            sharing = [e for e in sharing if e.loaded]
        for i, entry in enumerate(sharing):
            for theirs in sharing[:i]:
                if not entry.problem_types or not theirs.problem_types or \
                        set(entry.problem_types) & set(theirs.problem_types):
                    raise LmshrinkError(f"{self.kind.capitalize()}s {theirs.name!r} ({theirs.package}) and "
                                        f"{entry.name!r} ({entry.package}) both answer to {alias!r} for the same "
                                        "problems.")

    def _candidates(self, name: str) -> list[Entry]:
        """Entries ``name`` may mean: the canonical one first, then those with that alias."""
        found = [self._entries[name]] if name in self._entries else []
        if name in self._aliases:
            self._check_alias(name)
        return found + [self._entries[k] for k in self._aliases.get(name, [])]

    def entry(self, name: str) -> Entry:
        """The entry called ``name``: its canonical name, or an alias only one entry has."""
        found = self._candidates(name)
        if not found:
            raise unknown_name(self.kind, name, [*self._entries, *self._aliases])
        if name not in self._entries and len(found) > 1:
            which = ", ".join(f"{e.name} ({'/'.join(t.__name__ for t in e.problem_types)})" for e in found)
            raise LmshrinkError(f"{self.kind.capitalize()} {name!r} is ambiguous without a problem type: it is "
                                f"{which}; give the problem, or the canonical name.")
        return found[0]

    def get(self, name: str) -> Any:
        """The registered object (usually a class) called ``name``."""
        return self.entry(name).obj

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """An instance of the class registered as ``name``."""
        return self.entry(name).create(*args, **kwargs)

    def for_problem(self, name: str, problem: Any) -> Any:
        """An instance of the plugin called ``name`` that supports ``problem`` (an instance or a problem class)."""
        found = self._candidates(name)
        if not found:
            raise unknown_name(self.kind, name, [*self._entries, *self._aliases])
        for entry in found:
            if entry.supports(problem):
                return entry.create()
        kinds = sorted({t.__name__ for e in found for t in e.problem_types})
        given = problem.__name__ if isinstance(problem, type) else type(problem).__name__
        raise LmshrinkError(f"{self.kind} {name!r} solves {', '.join(kinds)}, not {given}.")

    def names(self) -> list[str]:
        """Canonical names, sorted."""
        return sorted(self._entries)

    def aliases(self) -> dict[str, list[str]]:
        """alias → the canonical names it stands for."""
        return {a: list(v) for a, v in sorted(self._aliases.items())}

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[Entry]:
        """Every entry by canonical name (their objects are imported when first asked for)."""
        return iter([self._entries[name] for name in sorted(self._entries)])

    def __len__(self) -> int:
        return len(self._entries)
