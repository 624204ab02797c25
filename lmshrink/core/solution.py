"""Solutions and ranked solution sets returned by every solver."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Solution:
    """One assignment: a 0/1 vector for binary problems, a rank per matrix for rank allocation."""

    x: tuple[int, ...]
    energy: float
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def indices(self) -> tuple[int, ...]:
        """0-based positions of the ones (the removed blocks of a block-removal problem)."""
        return tuple(i for i, v in enumerate(self.x) if v)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"indices": list(self.indices), "energy": self.energy, "x": list(self.x)}
        out.update({k: v for k, v in self.info.items() if k not in out})
        return out


@dataclass
class SolutionSet:
    """Distinct solutions sorted by energy (lowest first), with wall time and backend facts."""

    solutions: list[Solution]
    solver: str
    time_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> Solution:
        if not self.solutions:
            raise ValueError(f"Solver {self.solver!r} returned no solution.")
        return self.solutions[0]

    @property
    def energies(self) -> np.ndarray:
        return np.array([s.energy for s in self.solutions])

    def __iter__(self) -> Iterator[Solution]:
        return iter(self.solutions)

    def __len__(self) -> int:
        return len(self.solutions)

    def __getitem__(self, i: int) -> Solution:
        return self.solutions[i]

    def to_dict(self) -> dict[str, Any]:
        return {
            "solver": self.solver,
            "time_s": self.time_s,
            "solutions": [s.to_dict() for s in self.solutions],
            "info": self.info,
        }
