"""Rank allocation for SVD compression: how many singular values each weight matrix keeps under one budget.

Each matrix l (shape m_l × n_l, k_l = min(m_l, n_l)) comes with its *whitened* singular values σ_{l,0} ≥ σ_{l,1} ≥
… ≥ 0: the singular values of W_l·S_l, where S_l Sᵀ_l is the Gram matrix XXᵀ of the matrix's calibration inputs
(SVD-LLM). Truncating W_l·S_l to rank r and mapping back gives W_{l,r}, whose error on the calibration inputs is
exactly the discarded tail (Eckart–Young on the whitened matrix, since ‖(W − W_r)X‖_F = ‖(WS − (WS)_r)S⁻¹X‖_F and
S⁻¹X has orthonormal rows):

    ‖(W_l − W_{l,r})X_l‖_F² = Σ_{i≥r} σ_{l,i}²                                                      (1)

A state x is the vector of integer ranks r_l. Its energy is the summed whitened truncation error

    E(x) = Σ_l w_l Σ_{i≥r_l} σ_{l,i}²                                                               (2)

with weights w_l = 1 by default. The objective may set w_l = 1 / Σ_i σ_{l,i}² ("normalized": each matrix's
*relative* output error), because raw errors of different matrices live on different scales (a down projection
fed by large MLP activations dwarfs an attention projection fed by RMS-normalized inputs) while the network is
not proportionally more sensitive to them. A problem may instead carry its own error table: ``errors[l][r]``, any
non-negative estimate of what rank r of matrix l costs (for instance the loss increase it causes), which then
replaces the tail Σ_{i≥r} σ_{l,i}² in (2); such a problem is written as format ``lmshrink.rank_allocation/2``.

Cost (stored numbers) of rank r: a plain factorization W_r = A·B stores r(m + n); the PivGa gauge-fixed form stores
r(m + n) − r² (see :mod:`lmshrink.compress.pivga`). Where that reaches the dense m·n the matrix is kept dense,
unchanged, at cost m·n and error 0 (a given table's rank-k entry). The *break-even* rank is the smallest r whose
factored cost is ≥ m·n; every rank from it up to k means "dense", so the allowed ranks are the factored ones below
break-even plus k itself (one canonical "dense" state). A state is feasible iff every rank is allowed and Σ_l
cost_l(r_l) ≤ budget.

A problem is plain data, the same whether built from a model or read from a file. A solver that can use the
model's own calibration loss (``fermigrad``) takes it apart from the problem, as a :class:`LossOracle` the
objective builds and the pipeline hands over (the solver option ``loss``); without one it optimises the energy (2).
Likewise an :class:`AllocationProbe` measures a hard allocation on the model (the ``trust-region`` composite's
option ``probe``).
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from .errors import LmshrinkError
from .problem import Problem


@runtime_checkable
class LossOracle(Protocol):
    """A differentiable calibration loss of soft keep-masks, for solvers that train on the model itself.

    Called with one 1-D torch tensor per matrix of the problem (in the problem's order, length min(m_l, n_l), values
    in [0, 1]: how much of each singular value is kept), it returns a scalar torch tensor differentiable with
    respect to the masks. An oracle may have ``names``, the matrices it covers, so that a solver can check they are
    the problem's. Any callable of that signature is one (the ``fermi-rank`` objective builds
    :class:`~lmshrink.objectives.fermi_rank.SoftTruncationLoss`).
    """

    def __init__(self, text: Any) -> None:
        # reached only when a command line gives the option as text (Option.parse calls its type)
        raise ValueError("a loss oracle is a Python object that the objective builds, not text")

    def __call__(self, masks: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class Probe:
    """What an :class:`AllocationProbe` measures at one allocation r⁰.

    ``loss`` is the calibration loss per token of the model with every matrix truncated to r⁰; ``tables[l][r]``
    (r = 0..k_l) estimates how that loss changes when matrix l alone moves from r⁰_l to r (so
    ``tables[l][r⁰_l] == 0``; entries may be negative); ``info`` holds facts for the report. ``curvature``, where the
    probe separates it, is the second-order part of ``tables`` (same shapes), for a solver that rescales the model's
    curvature to what it measures.
    """

    loss: float
    tables: list[np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)
    curvature: list[np.ndarray] | None = None


@runtime_checkable
class AllocationProbe(Protocol):
    """Measures a hard rank allocation on the model: called with one rank per matrix (the problem's order), it
    returns a :class:`Probe`. A probe may have ``names``, the matrices it covers. The ``fermi-rank`` objective
    builds :class:`~lmshrink.objectives.rank.RelinearizedProbe`; any callable of that signature is one."""

    def __init__(self, text: Any) -> None:
        # reached only when a command line gives the option as text (Option.parse calls its type)
        raise ValueError("a probe is a Python object that the objective builds, not text")

    def __call__(self, ranks: Sequence[int]) -> Probe: ...


def check_covers(runtime: Any, problem: RankAllocationProblem, what: str, called_with: str) -> None:
    """Refuse a runtime object (a :class:`LossOracle`, an :class:`AllocationProbe`) that is not callable, or whose
    ``names`` are not the problem's matrices in the problem's order."""
    if not callable(runtime):
        raise LmshrinkError(f"The {what} must be callable with {called_with}, not {type(runtime).__name__}.")
    names = getattr(runtime, "names", None)
    if names is not None and list(names) != list(problem.names):
        raise LmshrinkError(f"The {what} covers {len(names)} matrices that are not the problem's "
                            f"{problem.num_matrices}, in its order.")


def factored_cost(m: int, n: int, r: Any, pivga: bool = False) -> Any:
    """Numbers a rank-r factorization of an m × n matrix stores: r(m + n), or r(m + n) − r² gauge-fixed (PivGa)."""
    r = np.asarray(r, dtype=np.int64)
    out = r * (m + n) - (r * r if pivga else 0)
    return int(out) if out.ndim == 0 else out


def break_even_rank(m: int, n: int, pivga: bool = False) -> int:
    """Smallest rank whose factored cost reaches the dense m·n (at most min(m, n)); from it on, keep dense."""
    k = min(m, n)
    over = np.flatnonzero(factored_cost(m, n, np.arange(k + 1), pivga) >= m * n)
    return int(over[0]) if over.size else k


def allowed_ranks(grid: Sequence[int] | None, min_rank: int, break_even: int, k: int) -> np.ndarray:
    """The allowed ranks of a matrix of full rank k, ascending: those of ``grid`` (default: ``min_rank`` up) below
    ``break_even``, then k itself (kept dense)."""
    base = grid if grid is not None else range(max(min_rank, 0), k + 1)
    return np.array(sorted({int(r) for r in base if 0 <= r < break_even} | {k}), dtype=np.int64)


def cost_table(m: int, n: int, pivga: bool = False) -> np.ndarray:
    """cost[r] for r = 0..min(m, n): the factored cost below the break-even rank, the dense m·n from it on."""
    cost = np.asarray(factored_cost(m, n, np.arange(min(m, n) + 1), pivga), dtype=np.int64)
    cost[break_even_rank(m, n, pivga):] = m * n
    return cost


def error_table(errors: np.ndarray, break_even: int) -> np.ndarray:
    """A given per-rank error table (r = 0..k) with the ranks from ``break_even`` on (kept dense) set to the error
    of rank k (0 for a truncation error; a table measured around another allocation may give the dense matrix a
    value of its own)."""
    tail = np.array(errors, dtype=np.float64)
    tail[break_even:] = tail[-1]
    return tail


def tail_table(singular_values: np.ndarray, break_even: int) -> np.ndarray:
    """tail[r] = Σ_{i≥r} σ_i² for r = 0..k below ``break_even`` (0 from it on: kept dense), summed from the small
    end for accuracy."""
    s2 = np.asarray(singular_values) ** 2
    tail = np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]])
    tail[break_even:] = 0.0
    return tail


def check_error_tables(names: Sequence[str], shapes: Sequence[tuple[int, int]],
                       errors: Sequence[Any]) -> list[np.ndarray]:
    """Per-rank error tables as float arrays: for each matrix k + 1 finite, non-negative numbers (ranks 0..k)."""
    if len(errors) != len(names):
        raise LmshrinkError(f"errors lists {len(errors)} matrices, the problem has {len(names)}.")
    out = []
    for name, (m, n), e in zip(names, shapes, errors):
        e = np.asarray(e, dtype=np.float64).reshape(-1)
        if e.size != min(m, n) + 1 or not np.all(np.isfinite(e)) or (e < 0).any():
            raise LmshrinkError(f"errors of {name} must be {min(m, n) + 1} finite, non-negative numbers "
                                f"(one per rank 0..{min(m, n)}).")
        out.append(e)
    return out


def split_error_tables(flat: Any, sizes: Sequence[int]) -> list[np.ndarray] | None:
    """The per-matrix tables of a file's concatenated ``errors`` (None when absent); ``sizes`` are the full ranks."""
    if flat is None or np.asarray(flat).ndim == 0:
        return None
    flat = np.asarray(flat, dtype=np.float64).reshape(-1)
    need = sum(sizes) + len(sizes)
    if flat.size != need:
        raise LmshrinkError(f"errors has {flat.size} entries, the shapes need {need} (one per rank 0..k of every "
                            "matrix).")
    return np.split(flat, np.cumsum([k + 1 for k in sizes])[:-1]) if sizes else []


@dataclass
class RankAllocationProblem(Problem):
    """Choose a rank per matrix minimising the summed (weighted) whitened truncation error under a parameter budget.

    ``names[l]``, ``shapes[l] = (m, n)`` (out × in, like ``nn.Linear.weight``) and ``singular_values[l]`` (length
    min(m, n), descending) describe matrix l. ``budget`` is the most stored numbers the decomposed matrices may keep
    in total. ``pivga`` selects the cost r(m+n) − r² instead of r(m+n). ``grid`` optionally lists the allowed ranks
    per matrix (before break-even filtering); without it every rank from ``min_rank`` up is allowed. The dense
    rank k = min(m, n) is always allowed. ``errors`` optionally gives per matrix the error of every rank 0..k
    (k + 1 non-negative numbers), used in the energy instead of the whitened tail Σ_{i≥r} σ_i².
    """

    FORMAT: ClassVar[str] = "lmshrink.rank_allocation/1"
    FORMAT_ERRORS: ClassVar[str] = "lmshrink.rank_allocation/2"
    ALSO_READS: ClassVar[tuple[str, ...]] = (FORMAT_ERRORS,)

    names: list[str]
    shapes: list[tuple[int, int]]
    singular_values: list[np.ndarray]
    budget: float
    pivga: bool = False
    grid: list[list[int]] | None = None
    min_rank: int = 1
    weights: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    errors: list[np.ndarray] | None = None

    def __post_init__(self) -> None:
        L = len(self.names)
        self.names = [str(n) for n in self.names]
        self.shapes = [(int(m), int(n)) for m, n in self.shapes]
        if len(self.shapes) != L or len(self.singular_values) != L:
            raise LmshrinkError(
                f"{L} names, {len(self.shapes)} shapes and {len(self.singular_values)} singular-value lists differ."
            )
        svs = []
        for name, (m, n), s in zip(self.names, self.shapes, self.singular_values):
            s = np.asarray(s, dtype=np.float64).reshape(-1)
            if m < 1 or n < 1:
                raise LmshrinkError(f"Matrix {name} has shape {(m, n)}.")
            if s.size != min(m, n):
                raise LmshrinkError(f"Matrix {name} of shape {(m, n)} has {s.size} singular values, not {min(m, n)}.")
            if (s < 0).any() or (np.diff(s) > 1e-9 * max(float(s[0]) if s.size else 0.0, 1e-300)).any():
                raise LmshrinkError(f"Singular values of {name} must be non-negative and descending.")
            svs.append(s)
        self.singular_values = svs
        self.budget = float(self.budget)
        self.pivga = bool(self.pivga)
        self.min_rank = int(self.min_rank)
        if self.weights is not None:
            self.weights = np.asarray(self.weights, dtype=np.float64).reshape(-1)
            if self.weights.shape != (L,) or (self.weights < 0).any():
                raise LmshrinkError(f"weights must be {L} non-negative numbers.")
        if self.grid is not None:
            if len(self.grid) != L:
                raise LmshrinkError(f"grid lists {len(self.grid)} matrices, the problem has {L}.")
            grid = []
            for name, (m, n), g in zip(self.names, self.shapes, self.grid):
                g = sorted({int(r) for r in g})
                if not g or g[0] < 0 or g[-1] > min(m, n):
                    raise LmshrinkError(f"grid of {name} must list ranks in 0..{min(m, n)}.")
                grid.append(g)
            self.grid = grid
        self._be = [break_even_rank(m, n, self.pivga) for m, n in self.shapes]
        grid = self.grid or [None] * L
        self._allowed = [allowed_ranks(grid[l], self.min_rank, self._be[l], self.max_rank(l)) for l in range(L)]
        self._cost = [cost_table(m, n, self.pivga) for m, n in self.shapes]
        if self.errors is not None:
            self.errors = check_error_tables(self.names, self.shapes, self.errors)
            self._tail = [error_table(e, be) for e, be in zip(self.errors, self._be)]
        else:
            self._tail = [tail_table(s, be) for s, be in zip(self.singular_values, self._be)]
        if self.budget < self.min_cost() - 1e-9:
            raise LmshrinkError(
                f"Budget {self.budget:,.0f} is below the cost {self.min_cost():,} of the smallest allowed ranks."
            )

    # --- per-matrix tables --------------------------------------------------------------------------------------
    @property
    def num_matrices(self) -> int:
        return len(self.names)

    def max_rank(self, l: int) -> int:
        """k_l = min(m, n): the full (dense) rank of matrix l."""
        m, n = self.shapes[l]
        return min(m, n)

    def dense_size(self, l: int) -> int:
        """m·n, the numbers a dense matrix stores."""
        m, n = self.shapes[l]
        return m * n

    def factored_cost(self, l: int, r: int | np.ndarray) -> Any:
        """Numbers stored by the rank-r factored form: r(m+n), or r(m+n) − r² with PivGa (no dense cap)."""
        m, n = self.shapes[l]
        return factored_cost(m, n, r, self.pivga)

    def break_even(self, l: int) -> int:
        """Smallest rank whose factored cost reaches the dense m·n (≤ k; ranks from here on mean "dense")."""
        return self._be[l]

    def is_dense(self, l: int, r: int) -> bool:
        """Whether rank ``r`` of matrix l means keeping it dense (r at or above break-even)."""
        return int(r) >= self.break_even(l)

    def cost_table(self, l: int) -> np.ndarray:
        """cost[r] for r = 0..k: the factored cost below break-even, m·n from break-even on."""
        return self._cost[l]

    def tail_table(self, l: int) -> np.ndarray:
        """tail[r] for r = 0..k: Σ_{i≥r} σ_i² (the truncation error (1)), or ``errors[l][r]`` where the problem
        carries an error table, below break-even; 0 when dense."""
        return self._tail[l]

    def allowed_ranks(self, l: int) -> np.ndarray:
        """The allowed ranks of matrix l, ascending: grid (or min_rank..) below break-even, plus k (dense)."""
        return self._allowed[l]

    def weight(self, l: int) -> float:
        return 1.0 if self.weights is None else float(self.weights[l])

    # --- totals ------------------------------------------------------------------------------------------------
    @property
    def total_dense(self) -> int:
        """Σ_l m_l n_l: the parameters of the decomposed matrices before compression."""
        return int(sum(m * n for m, n in self.shapes))

    @property
    def ratio(self) -> float:
        """budget / total_dense."""
        return self.budget / self.total_dense

    def min_cost(self) -> int:
        """Cost of the smallest allowed rank of every matrix."""
        return int(sum(self._cost[l][self._allowed[l][0]] for l in range(self.num_matrices)))

    def cost(self, x: Sequence[int] | np.ndarray) -> int:
        """Total stored numbers of the ranks ``x`` (dense matrices count m·n)."""
        x = np.asarray(x, dtype=np.int64)
        return int(sum(self._cost[l][x[l]] for l in range(self.num_matrices)))

    def costs(self, X: np.ndarray) -> np.ndarray:
        X = self._check_states(X)
        return np.array([self.cost(row) for row in X], dtype=np.int64)

    def param_counts(self, x: Sequence[int] | np.ndarray) -> dict[str, int]:
        """Kept numbers of ranks ``x`` as plain low-rank factors and as PivGa factors (dense matrices m·n in both)."""
        x = np.asarray(x, dtype=np.int64)
        plain = pivga = dense = 0
        for l, r in enumerate(x):
            m, n = self.shapes[l]
            r = int(r)
            if self.is_dense(l, r):
                plain += m * n
                pivga += m * n
                dense += 1
                continue
            plain += min(r * (m + n), m * n)
            pivga += r * (m + n) - r * r
        return {"plain": plain, "pivga": pivga, "dense_matrices": dense, "total_dense": self.total_dense}

    def _check_states(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.num_matrices:
            raise LmshrinkError(f"Expected states of length {self.num_matrices}, got shape {X.shape}.")
        X = np.rint(X).astype(np.int64)
        for l in range(self.num_matrices):
            if (X[:, l] < 0).any() or (X[:, l] > self.max_rank(l)).any():
                raise LmshrinkError(f"Rank of {self.names[l]} outside 0..{self.max_rank(l)}.")
        return X

    # --- evaluation --------------------------------------------------------------------------------------------
    def energies(self, X: np.ndarray) -> np.ndarray:
        """Energy (2) of each row of a (K, L) rank matrix."""
        X = self._check_states(X)
        E = np.zeros(len(X))
        for l in range(self.num_matrices):
            E += self.weight(l) * self._tail[l][X[:, l]]
        return E

    def energy(self, x: Sequence[int] | np.ndarray) -> float:
        return float(self.energies(np.asarray(x)[None, :])[0])

    def is_feasible(self, x: Sequence[int] | np.ndarray) -> bool:
        x = np.asarray(x)
        if x.shape != (self.num_matrices,):
            return False
        if not np.all(np.rint(x) == x):
            return False
        x = x.astype(np.int64)
        for l in range(self.num_matrices):
            a = self._allowed[l]
            i = np.searchsorted(a, x[l])
            if i >= a.size or a[i] != x[l]:
                return False
        return self.cost(x) <= self.budget + 1e-9

    def next_rank(self, l: int, r: int, direction: int) -> int | None:
        """The allowed rank just above (direction +1) or below (−1) ``r``, or None."""
        a = self._allowed[l]
        if direction > 0:
            i = np.searchsorted(a, r, side="right")
            return int(a[i]) if i < a.size else None
        i = np.searchsorted(a, r, side="left") - 1
        return int(a[i]) if i >= 0 else None

    def is_saturated(self, x: Sequence[int] | np.ndarray) -> bool:
        """Feasible and tight: no single matrix can move up to its next allowed rank within the budget."""
        if not self.is_feasible(x):
            return False
        x = np.asarray(x, dtype=np.int64)
        total = self.cost(x)
        for l in range(self.num_matrices):
            up = self.next_rank(l, int(x[l]), +1)
            if up is not None and total - self._cost[l][x[l]] + self._cost[l][up] <= self.budget + 1e-9:
                return False
        return True

    def describe(self, x: Sequence[int]) -> str:
        """``name=rank`` per matrix (``name=dense`` where kept dense), then the cost against the budget."""
        parts = [
            f"{self.names[l]}={'dense' if self.is_dense(l, int(r)) else int(r)}" for l, r in enumerate(x)
        ]
        return f"[{', '.join(parts)}] cost {self.cost(x):,}/{self.budget:,.0f}"

    # --- files -------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data; the singular values are concatenated in matrix order (matrix l has min(m_l, n_l) of them)."""
        return {
            "format": self.FORMAT if self.errors is None else self.FORMAT_ERRORS,
            "names": list(self.names),
            "shapes": [list(s) for s in self.shapes],
            "singular_values": np.concatenate(self.singular_values) if self.singular_values else np.zeros(0),
            "budget": self.budget,
            "pivga": self.pivga,
            "grid": self.grid,
            "min_rank": self.min_rank,
            "weights": self.weights,
            "metadata": self.metadata,
            **({} if self.errors is None else {"errors": np.concatenate(self.errors)}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RankAllocationProblem:
        cls.check_format(data)
        shapes = [(int(m), int(n)) for m, n in data["shapes"]]
        flat = np.asarray(data["singular_values"], dtype=np.float64).reshape(-1)
        sizes = [min(m, n) for m, n in shapes]
        if flat.size != sum(sizes):
            raise LmshrinkError(f"singular_values has {flat.size} entries, the shapes need {sum(sizes)}.")
        svs = np.split(flat, np.cumsum(sizes)[:-1]) if shapes else []
        weights = data.get("weights")
        grid = data.get("grid")
        errors = split_error_tables(data.get("errors"), sizes)
        return cls(
            names=list(data["names"]),
            shapes=shapes,
            singular_values=[np.array(s) for s in svs],
            budget=float(data["budget"]),
            pivga=bool(data.get("pivga", False)),
            grid=None if grid is None or (isinstance(grid, np.ndarray) and grid.ndim == 0) else list(grid),
            min_rank=int(data.get("min_rank", 1)),
            weights=None if weights is None or np.asarray(weights).ndim == 0 else np.asarray(weights),
            metadata=dict(data.get("metadata", {})),
            errors=errors,
        )

    def with_budget(self, budget: float) -> RankAllocationProblem:
        """The same matrices under another budget."""
        return dataclasses.replace(self, budget=budget, metadata=dict(self.metadata, ratio=budget / self.total_dense))

    def __repr__(self) -> str:
        kind = "PivGa" if self.pivga else "low-rank"
        return (
            f"RankAllocationProblem(L={self.num_matrices}, budget={self.budget:,.0f}/{self.total_dense:,} "
            f"({self.ratio:.3f}), {kind})"
        )


# --- helpers shared by the rank solvers -------------------------------------------------------------------------
def marginal_values(problem: RankAllocationProblem) -> list[np.ndarray]:
    """v_{l,i} = w_l σ_{l,i}²: the energy (2) that keeping singular value i of matrix l removes (with an error
    table, w_l times the table's drop from rank i to rank i + 1, which may be negative)."""
    if problem.errors is not None:
        return [problem.weight(l) * -np.diff(problem.errors[l]) for l in range(problem.num_matrices)]
    return [problem.weight(l) * problem.singular_values[l] ** 2 for l in range(problem.num_matrices)]


def _step_value(csum: list[np.ndarray], l: int, lo: int, hi: int) -> float:
    """Value of moving matrix l from rank lo up to rank hi: Σ_{lo≤i<hi} v_{l,i} (to dense, hi = k: the whole tail)."""
    return float(csum[l][hi] - csum[l][lo])


def repair_ranks(
    problem: RankAllocationProblem,
    ranks: Sequence[int] | np.ndarray,
    values: list[np.ndarray] | None = None,
    *,
    fill: bool = True,
) -> np.ndarray:
    """Make ``ranks`` feasible and (with ``fill``) saturated, greedily by value per cost.

    ``values[l][i] ≥ 0`` estimates what keeping singular value i of matrix l is worth (default: the energy (2)).
    Each rank is first snapped to the nearest allowed rank. While the cost exceeds the budget, the matrix whose
    step down to its next allowed rank loses the least value per number saved steps down. Then, while some matrix
    can step up within the budget, the fitting step with the most value per added number is taken, so at the end
    no further rank step fits.
    """
    values = marginal_values(problem) if values is None else [np.maximum(np.asarray(v, float), 0) for v in values]
    csum = [np.concatenate([[0.0], np.cumsum(v)]) for v in values]
    L = problem.num_matrices
    x = np.zeros(L, dtype=np.int64)
    for l, r in enumerate(np.asarray(ranks)):
        a = problem.allowed_ranks(l)
        x[l] = a[np.argmin(np.abs(a - float(r)))]
    cost = [problem.cost_table(l) for l in range(L)]
    total = sum(int(cost[l][x[l]]) for l in range(L))
    budget = problem.budget + 1e-9

    def down_entry(l: int) -> tuple[float, int, int] | None:
        down = problem.next_rank(l, int(x[l]), -1)
        if down is None:
            return None
        saved = cost[l][x[l]] - cost[l][down]
        return _step_value(csum, l, down, int(x[l])) / max(saved, 1e-12), l, down

    def up_entry(l: int) -> tuple[float, int, int] | None:
        up = problem.next_rank(l, int(x[l]), +1)
        if up is None:
            return None
        added = cost[l][up] - cost[l][x[l]]
        return -_step_value(csum, l, int(x[l]), up) / max(added, 1e-12), l, up

    # lazy heaps: an entry is stale when its matrix moved since it was pushed
    if total > budget:
        heap = [e for e in (down_entry(l) for l in range(L)) if e is not None]
        heapq.heapify(heap)
        while total > budget:
            if not heap:
                raise LmshrinkError("No rank can be lowered further, and the budget is still exceeded.")
            _, l, down = heapq.heappop(heap)
            if problem.next_rank(l, int(x[l]), -1) != down:
                continue
            total -= int(cost[l][x[l]] - cost[l][down])
            x[l] = down
            e = down_entry(l)
            if e is not None:
                heapq.heappush(heap, e)
    if fill:
        heap = [e for e in (up_entry(l) for l in range(L)) if e is not None]
        heapq.heapify(heap)
        while heap:
            _, l, up = heapq.heappop(heap)
            if problem.next_rank(l, int(x[l]), +1) != up:
                continue
            added = int(cost[l][up] - cost[l][x[l]])
            if total + added > budget:
                continue  # the total only grows from here: this step will never fit
            total += added
            x[l] = up
            e = up_entry(l)
            if e is not None:
                heapq.heappush(heap, e)
    return x


def uniform_ranks(problem: RankAllocationProblem, ratio: float | None = None) -> np.ndarray:
    """Per matrix the largest allowed rank whose cost is at most ``ratio`` (default budget/total) of its m·n."""
    ratio = problem.ratio if ratio is None else float(ratio)
    x = np.zeros(problem.num_matrices, dtype=np.int64)
    for l in range(problem.num_matrices):
        a = problem.allowed_ranks(l)
        c = problem.cost_table(l)[a]
        ok = np.flatnonzero(c <= ratio * problem.dense_size(l) + 1e-9)
        x[l] = a[ok[-1]] if ok.size else a[0]
    return x
