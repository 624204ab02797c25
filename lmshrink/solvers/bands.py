"""Weighted bands ``L ≤ Σ_i w_i x_i ≤ U`` taken apart into the pieces solvers know how to handle.

A parameter budget is a band over units of a few sizes (SmolLM2 sub-layers: attention 884,736 and MLP 2,654,208
parameters). Grouping a band's variables by equal weight into *classes* ``c`` (weight ``w_c``, ``n_c`` variables),
a state satisfies the band exactly when its counts ``m_c`` (ones per class) satisfy ``L ≤ Σ_c w_c m_c ≤ U``. So the
feasible set is the disjoint union, over the feasible count tuples, of cardinality-constrained sets:

    {x : L ≤ w·x ≤ U} = ⋃_{m : L ≤ Σ_c w_c m_c ≤ U} {x : Σ_{i∈c} x_i = m_c for every class c}.

:func:`cardinality_splits` turns a problem with bands into those cardinality problems (same objective, same
variables), which a cardinality solver (the branch and bound of ``exact``) solves one by one; the k lowest of the
union are the k lowest of the merged results. :func:`group_patterns` lists a group's feasible 0/1 patterns for
enumeration.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np

from ..core import BinaryQuadraticProblem, Constraint, LmshrinkError

#: a band group with at most this many variables is enumerated bit pattern by bit pattern
BITS_UP_TO = 20


def weight_classes(c: Constraint) -> list[tuple[float, np.ndarray]]:
    """The variables of ``c`` grouped by equal weight: (weight, indices) per class, lightest first."""
    w = c.weight_array()
    idx = np.asarray(c.indices, dtype=np.int64)
    return [(float(v), idx[w == v]) for v in np.unique(w)]


def class_counts(c: Constraint, limit: int = 10_000) -> list[tuple[int, ...]] | None:
    """The count tuples ``(m_1, …, m_K)`` (ones per weight class of :func:`weight_classes`) whose weighted sum lies
    in the band; None when there are more than ``limit`` tuples to look at (too many distinct weights)."""
    classes = weight_classes(c)
    sizes = [len(i) for _, i in classes]
    if math.prod(s + 1 for s in sizes) > 50 * limit:
        return None
    weights = np.array([w for w, _ in classes])
    grids = np.stack(np.meshgrid(*[np.arange(s + 1) for s in sizes], indexing="ij"), axis=-1).reshape(-1, len(sizes))
    picked = grids[_sums_inside(c, grids @ weights)]
    if len(picked) > limit:
        return None
    return [tuple(int(v) for v in row) for row in picked]


def cardinality_splits(problem: BinaryQuadraticProblem, limit: int = 2_000) -> list[BinaryQuadraticProblem] | None:
    """The problem's feasible set as a disjoint union of cardinality-constrained problems (module docstring).

    Each returned problem has the same variables and objective; a band becomes one cardinality per weight class.
    Returns ``[problem]`` when it has no band, and None when the union would hold more than ``limit`` problems.
    """
    if not problem.has_weighted_constraints:
        return [problem]
    per_constraint: list[list[list[Constraint]]] = []
    total = 1
    for k, c in enumerate(problem.constraints):
        if c.is_cardinality:
            per_constraint.append([[c]])
            continue
        counts = class_counts(c, limit)
        if counts is None:
            return None
        classes = weight_classes(c)
        name = c.name or f"constraint{k}"
        options = [[Constraint(tuple(idx.tolist()), m, f"{name}[w={w:g}]") for (w, idx), m in zip(classes, ms)]
                   for ms in counts]
        per_constraint.append(options)
        total *= len(options)
        if total > limit:
            return None
    out = []
    for combo in itertools.product(*per_constraint):
        constraints = [c for part in combo for c in part]
        out.append(BinaryQuadraticProblem(variables=list(problem.variables), linear=problem.linear,
                                          quadratic=problem.quadratic, offset=problem.offset,
                                          constraints=constraints, metadata=dict(problem.metadata)))
    return out


def _bit_patterns(n: int) -> np.ndarray:
    """All 2^n 0/1 rows of length n (int8)."""
    return ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(np.int8)


def _combination_patterns(n: int, m: int) -> np.ndarray:
    """The C(n, m) rows of length n with m ones (int8)."""
    if m == 0:
        return np.zeros((1, n), dtype=np.int8)
    rows = np.array(list(itertools.combinations(range(n), m)), dtype=np.int64).reshape(-1, m)
    X = np.zeros((len(rows), n), dtype=np.int8)
    np.put_along_axis(X, rows, 1, axis=1)
    return X


def group_patterns(c: Constraint, max_rows: int = 5_000_000) -> np.ndarray:
    """Every feasible 0/1 pattern of a constraint's variables, as a (P, |c|) int8 matrix in the order of
    ``c.indices``: combinations for a cardinality; for a band, all bit patterns filtered by the band (up to
    :data:`BITS_UP_TO` variables) or the union over its class counts. Refuses more than ``max_rows`` patterns."""
    n = len(c.indices)
    if c.is_cardinality:
        if math.comb(n, c.equals) > max_rows:
            raise LmshrinkError(f"Constraint {c.name or '(unnamed)'!r} has {math.comb(n, c.equals):,} patterns, "
                                f"more than {max_rows:,} to enumerate.")
        return _combination_patterns(n, c.equals)
    if n <= BITS_UP_TO:
        X = _bit_patterns(n)
        return X[_inside(c, X)]
    counts = class_counts(c)
    if counts is None:
        raise LmshrinkError(f"Constraint {c.name or '(unnamed)'!r} has too many distinct weights to enumerate.")
    classes = weight_classes(c)
    position = {v: p for p, v in enumerate(c.indices)}
    total = sum(math.prod(math.comb(len(idx), m) for (_, idx), m in zip(classes, ms)) for ms in counts)
    if total > max_rows:
        raise LmshrinkError(f"Constraint {c.name or '(unnamed)'!r} has {total:,} feasible patterns, more than "
                            f"{max_rows:,} to enumerate.")
    blocks = []
    for ms in counts:
        parts = [(_combination_patterns(len(idx), m), [position[int(v)] for v in idx]) for (_, idx), m in zip(classes, ms)]
        sizes = [len(p) for p, _ in parts]
        grid = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), axis=-1).reshape(-1, len(sizes))
        block = np.zeros((len(grid), n), dtype=np.int8)
        for t, (pat, cols) in enumerate(parts):
            block[:, cols] = pat[grid[:, t]]
        blocks.append(block)
    return np.concatenate(blocks) if blocks else np.zeros((0, n), dtype=np.int8)


def _inside(c: Constraint, X: np.ndarray) -> np.ndarray:
    """Rows of a (k, |c|) pattern matrix (columns in the order of ``c.indices``) inside the band."""
    return _sums_inside(c, X @ c.weight_array())


def _sums_inside(c: Constraint, sums: np.ndarray) -> np.ndarray:
    """Which weighted sums lie inside the band of ``c`` (within its tolerance)."""
    tol = c.tolerance()
    ok = np.ones(len(sums), dtype=bool)
    if c.lower is not None:
        ok &= sums >= c.lower - tol
    if c.upper is not None:
        ok &= sums <= c.upper + tol
    return ok


def product_states(problem: BinaryQuadraticProblem, patterns: list[np.ndarray],
                   chunk: int = 1 << 15) -> Iterator[np.ndarray]:
    """Every combination of one pattern per group (``patterns[g]`` for ``problem.constraints[g]``) and any values of
    the free variables, as (≤ chunk, N) int8 matrices, enumerated in flat index order (vectorised per chunk)."""
    n = problem.num_variables
    free = np.array(problem.free_indices, dtype=np.int64)
    cols = [np.asarray(c.indices, dtype=np.int64) for c in problem.constraints]
    pats = list(patterns)
    if len(free):
        cols.append(free)
        pats.append(_bit_patterns(len(free)))
    sizes = [len(p) for p in pats]
    total = math.prod(sizes)
    for start in range(0, total, chunk):
        flat = np.arange(start, min(start + chunk, total), dtype=np.int64)
        X = np.zeros((len(flat), n), dtype=np.int8)
        if sizes:
            picks = np.unravel_index(flat, sizes)
            for c, p, pick in zip(cols, pats, picks):
                X[:, c] = p[pick]
        yield X
