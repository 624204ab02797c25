"""The constraint layout of a binary problem as flat integer arrays, the form the compiled kernels take."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...core import BinaryQuadraticProblem, LmshrinkError


@dataclass(frozen=True)
class Layout:
    """Disjoint cardinality groups and the free variables of an N-variable problem.

    ``members[start[g] : start[g] + size[g]]`` are the variables of group ``g``, exactly ``equals[g]`` of which are 1;
    ``free`` lists the variables in no group.
    """

    n: int
    members: np.ndarray
    start: np.ndarray
    size: np.ndarray
    equals: np.ndarray
    free: np.ndarray

    @property
    def num_groups(self) -> int:
        return len(self.size)

    def group(self, g: int) -> np.ndarray:
        return self.members[self.start[g] : self.start[g] + self.size[g]]

    def is_feasible(self, X: np.ndarray) -> np.ndarray:
        """Per row of a (k, N) 0/1 matrix: does every group hold exactly its count of ones?"""
        X = np.atleast_2d(X)
        ok = np.isin(X, (0, 1)).all(axis=1)
        for g in range(self.num_groups):
            ok &= X[:, self.group(g)].sum(axis=1) == self.equals[g]
        return ok


def make_layout(n: int, groups: Sequence[Sequence[int]], equals: Sequence[int]) -> Layout:
    """Check and flatten ``groups`` (disjoint index lists) with their counts ``equals``; the rest are free."""
    if len(groups) != len(equals):
        raise LmshrinkError(f"{len(groups)} groups but {len(equals)} counts.")
    seen = np.zeros(n, dtype=bool)
    members, start, size = [], [], []
    for g, (idx, m) in enumerate(zip(groups, equals)):
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise LmshrinkError(f"Group {g} refers to a variable outside 0..{n - 1}.")
        if seen[idx].any() or len(np.unique(idx)) != len(idx):
            raise LmshrinkError(f"Group {g} overlaps another group or lists a variable twice.")
        if not 0 <= int(m) <= len(idx):
            raise LmshrinkError(f"Group {g} asks for {int(m)} ones among {len(idx)} variables.")
        seen[idx] = True
        start.append(sum(size))
        size.append(len(idx))
        members.extend(idx.tolist())
    as_int = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    return Layout(n, as_int(members), as_int(start), as_int(size), as_int(list(equals)), as_int(np.flatnonzero(~seen)))


def problem_layout(problem: BinaryQuadraticProblem) -> Layout:
    """The :class:`Layout` of a problem's constraints (cardinalities only: a weighted band is refused)."""
    problem.require_cardinality("The compiled kernels' layout")
    return make_layout(problem.num_variables, [c.indices for c in problem.constraints],
                       [c.equals for c in problem.constraints])


def check_qubo(linear: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``linear`` and ``Q`` as contiguous float64 arrays, refusing shapes that do not match or a non-symmetric Q."""
    linear = np.ascontiguousarray(linear, dtype=np.float64).reshape(-1)
    Q = np.ascontiguousarray(Q, dtype=np.float64)
    n = len(linear)
    if Q.shape != (n, n):
        raise LmshrinkError(f"Q has shape {Q.shape} for {n} linear terms.")
    if not np.allclose(Q, Q.T, rtol=1e-10, atol=1e-12 * (1 + np.abs(Q).max(initial=0))):
        raise LmshrinkError("Q must be symmetric.")
    if not (np.isfinite(linear).all() and np.isfinite(Q).all()):
        raise LmshrinkError("linear and Q must be finite.")
    return linear, Q


def energy_scale(linear: np.ndarray, Q: np.ndarray) -> float:
    """The largest energy change one flip can make, ``max_i |l_i + Q_ii| + 2 Σ_{j≠i} |Q_ij|`` (≥ 1e-300)."""
    off = np.abs(Q).sum(axis=1) - np.abs(np.diag(Q))
    return float(max((np.abs(linear + np.diag(Q)) + 2 * off).max(initial=0.0), 1e-300))


def qubo_energies(X: np.ndarray, linear: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """``l·x + xᵀQx`` of each row of a (k, N) 0/1 matrix."""
    X = np.asarray(X, dtype=np.float64)
    return X @ linear + np.einsum("ki,ki->k", X @ Q, X)
