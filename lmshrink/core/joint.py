"""One parameter budget over branch removal and SVD ranks: the joint compression problem.

A decoder layer adds two branches to the residual stream, attention and MLP. Branch b holds matrices M_b (q, k,
v, o or gate, up, down). Setting a branch's output projection to rank 0 *is* removing the branch, and then its
other matrices are worthless; so the choice is a grouped multiple-choice knapsack. State:

    z_b ∈ {0, 1}            branch b kept (1) or removed (0)
    r_m ∈ allowed ranks     the rank of matrix m of a kept branch (r_m = 0 for every matrix of a removed branch)

Energy, an estimated calibration-loss increase in nats per token:

    E(z, r) = Σ_b (1 − z_b) ΔL_b  +  Σ_b z_b Σ_{m∈M_b} c_m · tail_m(r_m) / Σ_i σ_{m,i}²               (1)

with ΔL_b the *measured* loss increase of removing branch b alone, tail_m(r) = Σ_{i≥r} σ_{m,i}² the whitened
truncation error of :mod:`lmshrink.core.rank` (0 when m stays dense) and c_m its sensitivity: the loss increase per
unit of *relative* whitened error, one factor per matrix kind calibrated on real truncations (see
:mod:`lmshrink.objectives.joint`). Cost, in stored numbers:

    C(z, r) = Σ_b z_b Σ_{m∈M_b} cost_m(r_m)  ≤  budget                                               (2)

with cost_m the factored cost r(m+n) (or PivGa r(m+n) − r²) below the break-even rank and m·n from it on, as in
:class:`~lmshrink.core.RankAllocationProblem`. A removed branch costs 0.

``allow_removal=False`` forces every z_b = 1 (SVD only); ``allow_factoring=False`` forces every kept matrix dense
(removal only). The state vector is the B branch decisions followed by the M ranks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .errors import LmshrinkError
from .problem import Problem
from .rank import (allowed_ranks, break_even_rank, check_error_tables, cost_table, error_table, split_error_tables,
                   tail_table)


#: how the truncation term of (1) is estimated (:func:`lmshrink.objectives.joint.measure_joint`): ``fisher`` (each
#: rank's Fisher loss estimate, an error table) or ``probes`` (one measured slope per matrix kind)
TRUNCATION_TERMS = ("fisher", "probes")


@dataclass
class JointCompressionProblem(Problem):
    """Remove branches and choose ranks for the matrices of the kept ones, minimising (1) under the budget (2).

    ``branches[b]`` names branch b and ``removal_loss[b]`` is ΔL_b. ``matrices[m]``, ``shapes[m] = (rows, cols)``,
    ``singular_values[m]`` (descending, min(rows, cols) of them) and ``branch_of[m]`` (an index into ``branches``)
    describe matrix m; ``sensitivity[m]`` is c_m of (1). ``budget`` is the most stored numbers all matrices may keep.
    ``grid`` optionally lists the allowed ranks per matrix (before break-even filtering; default every rank from
    ``min_rank``); the dense rank is always allowed.
    """

    FORMAT: ClassVar[str] = "lmshrink.joint_compression/1"
    FORMAT_ERRORS: ClassVar[str] = "lmshrink.joint_compression/2"
    ALSO_READS: ClassVar[tuple[str, ...]] = (FORMAT_ERRORS,)

    branches: list[str]
    removal_loss: np.ndarray
    matrices: list[str]
    shapes: list[tuple[int, int]]
    singular_values: list[np.ndarray]
    branch_of: list[int]
    sensitivity: np.ndarray
    budget: float
    pivga: bool = False
    min_rank: int = 1
    grid: list[list[int]] | None = None
    allow_removal: bool = True
    allow_factoring: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)
    errors: list[np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.branches = [str(b) for b in self.branches]
        self.matrices = [str(m) for m in self.matrices]
        B, M = len(self.branches), len(self.matrices)
        self.removal_loss = np.asarray(self.removal_loss, dtype=np.float64).reshape(-1)
        self.sensitivity = np.asarray(self.sensitivity, dtype=np.float64).reshape(-1)
        self.shapes = [(int(r), int(c)) for r, c in self.shapes]
        self.branch_of = [int(b) for b in self.branch_of]
        if self.removal_loss.shape != (B,) or not np.isfinite(self.removal_loss).all():
            raise LmshrinkError(f"removal_loss must be {B} finite numbers, one per branch.")
        if len(self.shapes) != M or len(self.singular_values) != M or len(self.branch_of) != M:
            raise LmshrinkError(f"{M} matrices need as many shapes, singular-value lists and branch indices.")
        if self.sensitivity.shape != (M,) or (self.sensitivity < 0).any():
            raise LmshrinkError(f"sensitivity must be {M} non-negative numbers, one per matrix.")
        if any(not 0 <= b < B for b in self.branch_of):
            raise LmshrinkError(f"branch_of must index the {B} branches.")
        svs = []
        for name, (r, c), s in zip(self.matrices, self.shapes, self.singular_values):
            s = np.asarray(s, dtype=np.float64).reshape(-1)
            if r < 1 or c < 1 or s.size != min(r, c):
                raise LmshrinkError(f"Matrix {name} of shape {(r, c)} has {s.size} singular values, not {min(r, c)}.")
            if (s < 0).any() or (np.diff(s) > 1e-9 * max(float(s[0]), 1e-300)).any():
                raise LmshrinkError(f"Singular values of {name} must be non-negative and descending.")
            svs.append(s)
        self.singular_values = svs
        self.budget, self.pivga, self.min_rank = float(self.budget), bool(self.pivga), int(self.min_rank)
        self.allow_removal, self.allow_factoring = bool(self.allow_removal), bool(self.allow_factoring)
        if self.errors is not None:
            self.errors = check_error_tables(self.matrices, self.shapes, self.errors)
        if self.grid is not None:
            if len(self.grid) != M:
                raise LmshrinkError(f"grid lists {len(self.grid)} matrices, the problem has {M}.")
            self.grid = [sorted({int(x) for x in g}) for g in self.grid]
        self._members = [[m for m in range(M) if self.branch_of[m] == b] for b in range(B)]
        self._allowed = [self._compute_allowed(m) for m in range(M)]
        self._cost = [cost_table(r, c, self.pivga) for r, c in self.shapes]
        self._err = [self._compute_error(m) for m in range(M)]
        if self.budget < self.min_cost() - 1e-9:
            raise LmshrinkError(f"Budget {self.budget:,.0f} is below {self.min_cost():,}, the least any choice "
                                f"allowed here stores.")

    # --- tables ------------------------------------------------------------------------------------------------
    @property
    def num_branches(self) -> int:
        return len(self.branches)

    @property
    def num_matrices(self) -> int:
        return len(self.matrices)

    @property
    def num_variables(self) -> int:
        """Length of a state: B branch decisions, then M ranks."""
        return self.num_branches + self.num_matrices

    def members(self, b: int) -> list[int]:
        """The matrices of branch b."""
        return self._members[b]

    def max_rank(self, m: int) -> int:
        return min(self.shapes[m])

    def allowed_ranks(self, m: int) -> np.ndarray:
        """Allowed ranks of matrix m while its branch is kept, ascending (the dense rank last)."""
        return self._allowed[m]

    def cost_table(self, m: int) -> np.ndarray:
        """cost[r], r = 0..k: factored cost below break-even, rows·cols from it on."""
        return self._cost[m]

    def error_table(self, m: int) -> np.ndarray:
        """err[r], r = 0..k: c_m · tail_m(r) / Σσ², the truncation term of (1), or the problem's own ``errors[m]``
        where it carries them (0 when dense)."""
        return self._err[m]

    def is_dense(self, m: int, r: int) -> bool:
        return int(r) >= break_even_rank(*self.shapes[m], self.pivga)

    def _compute_allowed(self, m: int) -> np.ndarray:
        k = self.max_rank(m)
        if not self.allow_factoring:
            return np.array([k], dtype=np.int64)
        base = self.grid[m] if self.grid is not None else None
        return allowed_ranks(base, self.min_rank, break_even_rank(*self.shapes[m], self.pivga), k)

    def _compute_error(self, m: int) -> np.ndarray:
        if self.errors is not None:
            return error_table(self.errors[m], break_even_rank(*self.shapes[m], self.pivga))
        tail = tail_table(self.singular_values[m], break_even_rank(*self.shapes[m], self.pivga))
        return self.sensitivity[m] * tail / max(float((self.singular_values[m] ** 2).sum()), 1e-300)

    # --- totals ------------------------------------------------------------------------------------------------
    @property
    def total_dense(self) -> int:
        """Σ rows·cols over all matrices: what the budget is a fraction of."""
        return int(sum(r * c for r, c in self.shapes))

    @property
    def ratio(self) -> float:
        return self.budget / max(self.total_dense, 1)

    def min_cost(self) -> int:
        """The least a feasible state stores: 0 when branches may go, else every matrix at its smallest rank."""
        if self.allow_removal:
            return 0
        return int(sum(self._cost[m][self._allowed[m][0]] for m in range(self.num_matrices)))

    def split(self, x: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(z, r): the branch decisions and the ranks of a state."""
        x = np.asarray(x)
        if x.shape != (self.num_variables,):
            raise LmshrinkError(f"Expected a state of length {self.num_variables}, got shape {x.shape}.")
        x = np.rint(x).astype(np.int64)
        return x[: self.num_branches], x[self.num_branches:]

    def state(self, kept: Sequence[int] | np.ndarray, ranks: Sequence[int] | np.ndarray) -> np.ndarray:
        """The state vector of branch decisions ``kept`` and ``ranks`` (ranks of removed branches set to 0)."""
        z = np.asarray(kept, dtype=np.int64)
        r = np.asarray(ranks, dtype=np.int64).copy()
        for m in range(self.num_matrices):
            if z[self.branch_of[m]] == 0:
                r[m] = 0
        return np.concatenate([z, r])

    def cost(self, x: Sequence[int] | np.ndarray) -> int:
        """Stored numbers (2) of a state."""
        z, r = self.split(x)
        return int(sum(self._cost[m][r[m]] for m in range(self.num_matrices) if z[self.branch_of[m]]))

    def energy(self, x: Sequence[int] | np.ndarray) -> float:
        """Energy (1) of a state."""
        z, r = self.split(x)
        if ((z < 0) | (z > 1)).any():
            raise LmshrinkError("Branch decisions must be 0 or 1.")
        if ((r < 0) | (r > np.array([self.max_rank(m) for m in range(self.num_matrices)]))).any():
            raise LmshrinkError("A rank is outside 0..min(rows, cols).")
        e = float(self.removal_loss[z == 0].sum())
        return e + float(sum(self._err[m][r[m]] for m in range(self.num_matrices) if z[self.branch_of[m]]))

    def energies(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2:
            raise LmshrinkError(f"Expected a (K, {self.num_variables}) state matrix, got shape {X.shape}.")
        return np.array([self.energy(x) for x in X])

    def is_feasible(self, x: Sequence[int] | np.ndarray) -> bool:
        x = np.asarray(x)
        if x.shape != (self.num_variables,) or not np.all(np.rint(x) == x):
            return False
        z, r = self.split(x)
        if ((z < 0) | (z > 1)).any() or (not self.allow_removal and (z == 0).any()):
            return False
        for m in range(self.num_matrices):
            if z[self.branch_of[m]] == 0:
                if r[m] != 0:
                    return False
            elif r[m] not in self._allowed[m]:
                return False
        return self.cost(x) <= self.budget + 1e-9

    def removed(self, x: Sequence[int] | np.ndarray) -> list[str]:
        """Names of the branches a state removes."""
        z, _ = self.split(x)
        return [self.branches[b] for b in range(self.num_branches) if z[b] == 0]

    def ranks(self, x: Sequence[int] | np.ndarray) -> dict[str, int]:
        """Matrix name → rank, for the matrices of kept branches."""
        z, r = self.split(x)
        return {self.matrices[m]: int(r[m]) for m in range(self.num_matrices) if z[self.branch_of[m]]}

    def factored(self, x: Sequence[int] | np.ndarray) -> list[str]:
        """Names of the matrices a state factors: in kept branches, below their dense rank."""
        z, r = self.split(x)
        return [self.matrices[m] for m in range(self.num_matrices)
                if z[self.branch_of[m]] and not self.is_dense(m, r[m])]

    def describe(self, x: Sequence[int]) -> str:
        gone = self.removed(x)
        return (f"removes {len(gone)} branches [{', '.join(gone)}], factors {len(self.factored(x))} matrices; "
                f"cost {self.cost(x):,}/{self.budget:,.0f}")

    # --- files -------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT if self.errors is None else self.FORMAT_ERRORS,
            "branches": list(self.branches),
            "removal_loss": self.removal_loss,
            "matrices": list(self.matrices),
            "shapes": [list(s) for s in self.shapes],
            "singular_values": np.concatenate(self.singular_values) if self.singular_values else np.zeros(0),
            "branch_of": list(self.branch_of),
            "sensitivity": self.sensitivity,
            "budget": self.budget,
            "pivga": self.pivga,
            "min_rank": self.min_rank,
            "grid": self.grid,
            "allow_removal": self.allow_removal,
            "allow_factoring": self.allow_factoring,
            "metadata": self.metadata,
            **({} if self.errors is None else {"errors": np.concatenate(self.errors)}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JointCompressionProblem:
        cls.check_format(data)
        shapes = [(int(r), int(c)) for r, c in data["shapes"]]
        flat = np.asarray(data["singular_values"], dtype=np.float64).reshape(-1)
        sizes = [min(s) for s in shapes]
        if flat.size != sum(sizes):
            raise LmshrinkError(f"singular_values has {flat.size} entries, the shapes need {sum(sizes)}.")
        grid = data.get("grid")
        errors = split_error_tables(data.get("errors"), sizes)
        return cls(
            branches=list(data["branches"]),
            removal_loss=np.asarray(data["removal_loss"], dtype=np.float64),
            matrices=list(data["matrices"]),
            shapes=shapes,
            singular_values=np.split(flat, np.cumsum(sizes)[:-1]) if shapes else [],
            branch_of=[int(b) for b in data["branch_of"]],
            sensitivity=np.asarray(data["sensitivity"], dtype=np.float64),
            budget=float(data["budget"]),
            pivga=bool(data.get("pivga", False)),
            min_rank=int(data.get("min_rank", 1)),
            grid=None if grid is None else [list(g) for g in grid],
            allow_removal=bool(data.get("allow_removal", True)),
            allow_factoring=bool(data.get("allow_factoring", True)),
            metadata=dict(data.get("metadata", {})),
            errors=errors,
        )

    def with_settings(self, *, budget: float | None = None, allow_removal: bool | None = None,
                      allow_factoring: bool | None = None) -> JointCompressionProblem:
        """The same measurements under another budget or with removal or factoring switched off."""
        return dataclasses.replace(
            self,
            budget=self.budget if budget is None else budget,
            allow_removal=self.allow_removal if allow_removal is None else allow_removal,
            allow_factoring=self.allow_factoring if allow_factoring is None else allow_factoring,
            metadata=dict(self.metadata),
        )

    def __repr__(self) -> str:
        return (f"JointCompressionProblem(branches={self.num_branches}, matrices={self.num_matrices}, "
                f"budget={self.budget:,.0f}/{self.total_dense:,} ({self.ratio:.3f}))")


__all__ = ["TRUNCATION_TERMS", "JointCompressionProblem"]
