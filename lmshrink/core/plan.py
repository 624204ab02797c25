"""Plans: the decisions a solver's solution stands for, in model terms.

A :class:`RemovalPlan` says which blocks to remove; a :class:`RankPlan` says which rank each decomposed matrix
keeps, and whether it stays dense. Both are plain data (no torch): a plan can be written, read back and applied
to the model later.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .adapter import Block
from .errors import LmshrinkError
from .rank import break_even_rank
from .records import attributes

if TYPE_CHECKING:
    from .rank import RankAllocationProblem


@dataclass
class RemovalPlan:
    """Which blocks to remove, with the energy (and measured loss, where re-ranked) that chose them."""

    blocks: list[Block]
    granularity: str = "layer"
    energy: float | None = None
    loss: float | None = None
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def indices(self) -> list[int]:
        return [b.index for b in self.blocks]

    def to_dict(self) -> dict[str, Any]:
        return {
            "indices": self.indices,
            "blocks": [b.to_dict() for b in self.blocks],
            "granularity": self.granularity,
            "energy": self.energy,
            "loss": self.loss,
            **self.source,
        }


def _integer(value: Any, what: str) -> int:
    """``value`` as an int; one sentence for anything that is not a whole number (bools and floats included)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LmshrinkError(f"{what} must be a whole number, not {value!r}.")
    return int(value)


@dataclass(frozen=True)
class MatrixRank:
    """One matrix of a :class:`RankPlan`: module path, shape (out, in), the rank it keeps, and whether it stays
    dense (its original weight kept unchanged; a plan made from a solution then has rank min(m, n))."""

    name: str
    shape: tuple[int, int]
    rank: int
    dense: bool

    def __post_init__(self) -> None:
        m, n = self.shape
        if m < 1 or n < 1:
            raise LmshrinkError(f"Matrix {self.name} has shape {(m, n)}.")
        if not 0 <= self.rank <= min(m, n):
            raise LmshrinkError(f"Rank {self.rank} of {self.name} is outside 0..{min(m, n)}.")

    @property
    def max_rank(self) -> int:
        return min(self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "rank": self.rank, "dense": self.dense}


@dataclass
class RankPlan:
    """Which rank each decomposed matrix keeps: dense, or factored (plain low-rank pair, or gauge-fixed PivGa
    factors when ``pivga``), with the energy and cost (stored numbers) of the allocation against the budget."""

    FORMAT: ClassVar[str] = "lmshrink.rank_plan/1"

    matrices: list[MatrixRank]
    pivga: bool = False
    energy: float | None = None
    cost: int | None = None
    budget: float | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [m.name for m in self.matrices]
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise LmshrinkError(f"The rank plan lists matrix {twice} twice.")

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.matrices]

    @property
    def ranks(self) -> dict[str, int]:
        """Matrix name → rank kept (min(m, n) for dense matrices)."""
        return {m.name: m.rank for m in self.matrices}

    def kind(self, matrix: MatrixRank) -> str:
        """``dense``, ``pivga`` or ``low_rank``: what the compressed model holds for ``matrix``."""
        return "dense" if matrix.dense else ("pivga" if self.pivga else "low_rank")

    @property
    def kinds(self) -> dict[str, str]:
        return {m.name: self.kind(m) for m in self.matrices}

    # --- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_solution(cls, problem: RankAllocationProblem, x: Sequence[int], *,
                      source: Mapping[str, Any] | None = None) -> RankPlan:
        """The plan of the ranks ``x`` of ``problem`` (a solver's state), with its energy and cost."""
        if len(x) != problem.num_matrices:
            raise LmshrinkError(f"{len(x)} ranks for the {problem.num_matrices} matrices of the problem.")
        matrices = [MatrixRank(name, problem.shapes[l], int(x[l]), problem.is_dense(l, int(x[l])))
                    for l, name in enumerate(problem.names)]
        return cls(matrices, problem.pivga, problem.energy(x), problem.cost(x), problem.budget, dict(source or {}))

    @classmethod
    def from_ranks(cls, shapes: Mapping[str, tuple[int, int]], ranks: Mapping[str, int], *,
                   pivga: bool = False) -> RankPlan:
        """The plan of the ranks ``ranks`` (name → rank) by the cost model alone: a rank at or above the
        break-even rank (where factoring stores as much as the dense m·n) keeps the matrix dense."""
        matrices = []
        for name, r in ranks.items():
            if name not in shapes:
                raise LmshrinkError(f"No matrix {name} to give a rank to.")
            m, n = shapes[name]
            matrices.append(MatrixRank(name, (int(m), int(n)), int(r), int(r) >= break_even_rank(m, n, pivga)))
        return cls(matrices, pivga)

    # --- files -------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT,
            **attributes(self, "pivga", "energy", "cost", "budget"),
            "matrices": [m.to_dict() for m in self.matrices],
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Any) -> RankPlan:
        """The plan of a dict written by :meth:`to_dict`; one sentence for anything malformed."""
        if not isinstance(data, dict) or data.get("format") != cls.FORMAT:
            raise LmshrinkError(f"Not a rank plan: expected a JSON object with format {cls.FORMAT!r}.")
        items = data.get("matrices")
        if not isinstance(items, list):
            raise LmshrinkError("A rank plan needs 'matrices', a list.")
        matrices = []
        for k, item in enumerate(items):
            if not isinstance(item, dict) or not {"name", "shape", "rank", "dense"} <= set(item):
                raise LmshrinkError(f"Matrix {k} of the rank plan needs name, shape, rank and dense.")
            shape = item["shape"]
            if not isinstance(shape, list) or len(shape) != 2:
                raise LmshrinkError(f"The shape of {item['name']} must be [out, in].")
            if not isinstance(item["dense"], bool):
                raise LmshrinkError(f"'dense' of {item['name']} must be true or false.")
            m, n = (_integer(v, f"The shape of {item['name']}") for v in shape)
            matrices.append(MatrixRank(str(item["name"]), (m, n), _integer(item["rank"], f"The rank of {item['name']}"),
                                       item["dense"]))
        for key in ("energy", "budget"):
            if data.get(key) is not None and (isinstance(data[key], bool) or not isinstance(data[key], (int, float))):
                raise LmshrinkError(f"'{key}' of a rank plan must be a number.")
        cost = data.get("cost")
        return cls(matrices, bool(data.get("pivga", False)), data.get("energy"),
                   None if cost is None else _integer(cost, "The cost of a rank plan"), data.get("budget"),
                   dict(data.get("source") or {}))

    def save(self, path: str | Path) -> Path:
        """Write the plan as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> RankPlan:
        """Read a plan written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise LmshrinkError(f"No rank plan file at {str(path)!r}.")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LmshrinkError(f"{str(path)!r} is not a JSON rank plan: {exc}") from exc
        return cls.from_dict(data)

    def __repr__(self) -> str:
        dense = sum(m.dense for m in self.matrices)
        cost = "" if self.cost is None or self.budget is None else f", cost {self.cost:,}/{self.budget:,.0f}"
        return f"RankPlan({len(self.matrices)} matrices, {dense} dense, {'PivGa' if self.pivga else 'low-rank'}{cost})"
