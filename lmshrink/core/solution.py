"""Solutions and ranked solution sets returned by every solver."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .records import attributes


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
class RawSummary:
    """What the sampler itself returned, before any composite (repair, polish, neighbour completion) changed it.

    ``best_energy`` is the lowest energy among the raw samples that were already feasible (None when none was).
    """

    num_samples: int
    num_feasible: int
    best_energy: float | None

    @property
    def feasible_fraction(self) -> float:
        return self.num_feasible / self.num_samples if self.num_samples else 0.0

    @classmethod
    def of(cls, problem: Any, states: np.ndarray) -> RawSummary:
        """The summary of ``states`` (rows) as samples of ``problem``."""
        X = np.atleast_2d(np.asarray(states))
        if X.size == 0:
            return cls(0, 0, None)
        X = np.rint(X).astype(np.int64)
        ok = np.array([problem.is_feasible(x) for x in X])
        best = float(problem.energies(X[ok]).min()) if ok.any() else None
        return cls(int(len(X)), int(ok.sum()), best)

    def to_dict(self) -> dict[str, Any]:
        return {"num_samples": self.num_samples, "num_feasible": self.num_feasible,
                "feasible_fraction": self.feasible_fraction, "best_energy": self.best_energy}


@dataclass
class SolutionSet:
    """Distinct solutions sorted by energy (lowest first), with wall time and backend facts.

    ``proven_optimal`` is what the run proved (the best solution is the optimum), the one source of truth for
    optimality: a solver that can prove optimality (``capabilities.proves_optimality``) may still stop at a time
    limit without a proof, and then says so here and in ``stopped_early``. ``raw`` summarises the sampler's own
    states before any repair or polish.
    """

    solutions: list[Solution]
    solver: str
    time_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    proven_optimal: bool = False
    stopped_early: bool = False
    raw: RawSummary | None = None

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
            **attributes(self, "solver", "time_s", "proven_optimal", "stopped_early"),
            "raw": self.raw.to_dict() if self.raw is not None else None,
            "solutions": [s.to_dict() for s in self.solutions],
            "info": self.info,
        }
