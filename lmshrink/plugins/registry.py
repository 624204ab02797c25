"""A name → plugin registry with provider facts and "did you mean" errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..core.errors import LmshrinkError, unknown_name


@dataclass(frozen=True)
class Entry:
    """One registered plugin object and the distribution that provides it."""

    name: str
    obj: Any
    package: str
    version: str

    @property
    def description(self) -> str:
        doc = (getattr(self.obj, "description", "") or getattr(self.obj, "help", "")
               or getattr(self.obj, "__doc__", "") or "")
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @property
    def problem_types(self) -> tuple[type, ...]:
        return tuple(getattr(self.obj, "problem_types", ()))


class Registry:
    """Plugins of one kind (solver, objective, adapter, command) by name.

    Solvers may share a name when they solve different problem types (``milp`` solves both binary problems and
    rank allocation); :meth:`for_problem` picks the one that supports a given problem.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, list[Entry]] = {}

    def add(self, obj: Any, *, package: str, version: str, name: str | None = None) -> None:
        key = name or getattr(obj, "name", None)
        if not key:
            raise LmshrinkError(f"A {self.kind} from {package} was registered without a name.")
        entry = Entry(key, obj, package, version)
        existing = self._entries.setdefault(key, [])
        for other in existing:
            if other.obj is obj:
                return
            shared = set(other.problem_types) & set(entry.problem_types)
            if not entry.problem_types or not other.problem_types or shared:
                raise LmshrinkError(
                    f"Two {self.kind}s are called {key!r}: one from {other.package}, one from {package}."
                )
        existing.append(entry)

    def entry(self, name: str) -> Entry:
        """The (first) entry called ``name``."""
        try:
            return self._entries[name][0]
        except KeyError:
            raise unknown_name(self.kind, name, self._entries) from None

    def get(self, name: str) -> Any:
        """The registered object (usually a class) called ``name``."""
        return self.entry(name).obj

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """An instance of the class registered as ``name``."""
        return self.get(name)(*args, **kwargs)

    def for_problem(self, name: str, problem: Any) -> Any:
        """An instance of the plugin called ``name`` that supports ``problem`` (an instance or a problem class)."""
        self.entry(name)  # unknown-name error first
        for entry in self._entries[name]:
            if isinstance(problem, type):
                if any(issubclass(problem, t) for t in entry.problem_types):
                    return entry.obj()
            elif entry.obj().supports(problem):
                return entry.obj()
        kinds = sorted({t.__name__ for e in self._entries[name] for t in e.problem_types})
        given = problem.__name__ if isinstance(problem, type) else type(problem).__name__
        raise LmshrinkError(f"{self.kind} {name!r} solves {', '.join(kinds)}, not {given}.")

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter([e for name in sorted(self._entries) for e in self._entries[name]])

    def __len__(self) -> int:
        return sum(len(v) for v in self._entries.values())
