"""One instance of the problem library: a block-removal problem with what is known about it.

An instance file (``<name>.json``, format ``lmshrink.library_instance/1``) holds

- ``problem``: the :class:`~lmshrink.core.BinaryQuadraticProblem` (the same keys as a problem file);
- ``reference``: the proven optimum, or the best known energy, with the solver and the seconds that found it;
- ``lowest``: the lowest feasible states (``indices`` of the removed blocks, ``energy``) and, for instances of real
  models, the measured calibration ``loss`` and held-out ``perplexity`` of each (``lowest_proven`` says whether
  the list is proven to be the lowest states, in order);
- ``measured``: how those were measured (the unpruned loss and perplexity, samples, tokens), or None;
- ``source``: the model, objective, granularity and removal counts that made the problem.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core import BinaryQuadraticProblem, LmshrinkError
from ..core.problem import json_default
from ..report import read_json

FORMAT = "lmshrink.library_instance/1"


@dataclass
class LibraryInstance:
    """A library problem with its reference energy, lowest states and (for real models) their measured values."""

    name: str
    problem: BinaryQuadraticProblem
    reference: dict[str, Any]
    lowest: list[dict[str, Any]]
    lowest_proven: bool = False
    measured: dict[str, Any] | None = None
    source: dict[str, Any] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)
    #: the states' losses and perplexities are still to be measured (an interrupted build)
    pending: bool = False

    @property
    def energy(self) -> float:
        """The proven optimal or best known energy."""
        return float(self.reference["energy"])

    @property
    def proven(self) -> bool:
        """Whether :attr:`energy` is proven optimal."""
        return bool(self.reference.get("proven"))

    def states(self) -> np.ndarray:
        """The lowest states as 0/1 rows, in the order listed."""
        X = np.zeros((len(self.lowest), self.problem.num_variables), dtype=np.int8)
        for row, state in zip(X, self.lowest):
            row[list(state["indices"])] = 1
        return X

    def losses(self) -> np.ndarray | None:
        """Measured calibration loss of each lowest state (None when the instance has none)."""
        values = [s.get("loss") for s in self.lowest]
        return None if any(v is None for v in values) else np.asarray(values, dtype=float)

    def constraints_text(self) -> str:
        """The constraints as ``name=M/size`` (``Σ=M/size`` when unnamed; a band as ``L≤name≤U/size``), without
        groups fixed to 0."""
        parts = [c.short_text() for c in self.problem.constraints if not (c.equals == 0 and c.name == "kept")]
        return ", ".join(parts) or "none"

    def summary(self) -> dict[str, Any]:
        """One row for tables: name, size, constraints, reference energy and how it was found, the states."""
        return {"instance": self.name, "variables": self.problem.num_variables,
                "constraints": self.constraints_text(), "energy": self.energy, "proven": self.proven,
                "solver": self.reference.get("solver"), "time_s": self.reference.get("time_s"),
                "lower_bound": self.reference.get("lower_bound"), "lowest": len(self.lowest),
                "lowest_proven": self.lowest_proven, "measured": self.losses() is not None, "pending": self.pending}

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "name": self.name, "reference": self.reference, "lowest": self.lowest,
                "lowest_proven": self.lowest_proven, "measured": self.measured, "source": self.source,
                "build": self.build, "pending_measurement": self.pending, "problem": self.problem.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "instance") -> LibraryInstance:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise LmshrinkError(f"{where} is not a library instance (format {found!r}, expected {FORMAT!r}).")
        missing = [k for k in ("name", "problem", "reference", "lowest") if k not in data]
        if missing:
            raise LmshrinkError(f"{where} lacks {missing[0]!r}; an instance has 'name', 'problem', 'reference' "
                                "and 'lowest'.")
        return cls(str(data["name"]), BinaryQuadraticProblem.from_dict(data["problem"]), dict(data["reference"]),
                   list(data["lowest"]), bool(data.get("lowest_proven", False)), data.get("measured"),
                   dict(data.get("source") or {}), dict(data.get("build") or {}),
                   bool(data.get("pending_measurement", False)))

    def save(self, path: str | Path) -> Path:
        """Write the instance as JSON, atomically (a half-written file never has the final name)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, default=json_default))
        os.replace(tmp, path)
        return path


def load_instance(path: str | Path) -> LibraryInstance:
    """Read one instance file; anything else gets one sentence."""
    return LibraryInstance.from_dict(read_json(path, "library instance file"), repr(str(path)))


def shipped_dir() -> Path:
    """The folder of the small reference set shipped inside the package."""
    return Path(__file__).with_name("data")


def load_library(folder: str | Path | None = None, names: list[str] | None = None) -> list[LibraryInstance]:
    """Every instance in ``folder`` (default: the shipped set), sorted by name; ``names`` picks some.

    A folder without instances, or a name it does not hold, gets one sentence listing what there is.
    """
    folder = shipped_dir() if folder is None else Path(folder)
    if not folder.is_dir():
        raise LmshrinkError(f"No library folder at {str(folder)!r}.")
    files = {p.stem: p for p in sorted(folder.glob("*.json")) if not p.name.startswith(("index", "."))}
    if not files:
        raise LmshrinkError(f"{str(folder)!r} holds no library instance (*.json); build one with "
                            "'lmshrink problems build'.")
    if names:
        unknown = [n for n in names if n not in files]
        if unknown:
            raise LmshrinkError(f"The library at {str(folder)!r} has no instance {unknown[0]!r}; it has "
                                f"{', '.join(files)}.")
        files = {n: files[n] for n in names}
    return [load_instance(p) for p in files.values()]
