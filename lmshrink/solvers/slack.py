"""The slack-penalty form of a problem with weighted bands, for samplers that see constraints only as penalties.

A band ``L ≤ Σ_i w_i x_i ≤ U`` becomes the equality ``Σ_i w_i x_i − s = L'`` with a slack
``s = δ Σ_k c_k b_k ∈ [0, U' − L']`` in binary slack bits ``b_k``, penalised as

    P · ((Σ_i w_i x_i − L' − δ Σ_k c_k b_k) / δ)²,

one unit of violation (δ) costing P. δ is the weights' greatest common divisor when they are integers (then the
sums are multiples of δ, and ``L' = ⌈L/δ⌉δ``, ``U' = ⌊U/δ⌋δ`` lose nothing), else ``(U' − L') / 255`` (a resolution
of 8 bits). A missing bound is the extreme sum the weights allow. The coefficients are the bounded binary expansion
``c = 1, 2, 4, …, 2^{K−2}, R − (2^{K−1} − 1)`` of ``R = (U' − L') / δ``, so ``Σ c_k b_k`` takes every integer in
[0, R] and none above (Karimi & Rosenberg's bounded-coefficient encoding; K = ⌊log₂ R⌋ + 1). A cardinality keeps
its plain penalty ``P (Σ x − M)²``. Expanding ``P (a·z − b)²`` over ``z = (x, slack bits)`` adds ``P a aᵀ`` to the
quadratic part, ``−2 P b a`` to the linear and ``P b²`` to the offset.

:func:`slack_problem` returns the unconstrained problem over the original variables then the slack bits; the
first N columns of its states are the original variables (:func:`project`).
"""

from __future__ import annotations

import math

import numpy as np

from ..core import BinaryQuadraticProblem, Constraint

#: slack bits resolve a band of non-integer weights into this many steps
NONINTEGER_STEPS = 255


def slack_coefficients(steps: int) -> list[int]:
    """The bounded binary expansion of ``steps`` (module docstring): Σ c_k b_k covers exactly 0..steps."""
    if steps <= 0:
        return []
    k = int(math.floor(math.log2(steps))) + 1
    coeffs = [1 << t for t in range(k - 1)]
    coeffs.append(steps - (sum(coeffs)))
    return [c for c in coeffs if c > 0]


def band_encoding(c: Constraint) -> tuple[float, float, list[int]]:
    """(δ, L', slack coefficients) of a band (module docstring)."""
    w = c.weight_array()
    lo_all, hi_all = float(w[w < 0].sum()), float(w[w > 0].sum())
    lower = lo_all if c.lower is None else max(float(c.lower), lo_all)
    upper = hi_all if c.upper is None else min(float(c.upper), hi_all)
    if np.all(w == np.rint(w)) and (w != 0).any():
        g = 0
        for v in np.abs(w).astype(np.int64):
            g = math.gcd(g, int(v))
        delta = float(g)
        tol = c.tolerance()
        lower = math.ceil((lower - tol) / delta) * delta
        upper = math.floor((upper + tol) / delta) * delta
        steps = int(round((upper - lower) / delta))
    else:
        width = max(upper - lower, 0.0)
        delta = width / NONINTEGER_STEPS if width > 0 else max(float(np.abs(w).max(initial=1.0)), 1e-300)
        steps = NONINTEGER_STEPS if width > 0 else 0
    return delta, lower, slack_coefficients(max(steps, 0))


def slack_problem(problem: BinaryQuadraticProblem, penalty: float) -> BinaryQuadraticProblem:
    """The unconstrained slack-penalty form (module docstring): original variables first, then each band's slack
    bits (named ``<constraint>:slack<k>``)."""
    n = problem.num_variables
    terms: list[tuple[np.ndarray, np.ndarray, float]] = []  # (indices into z, coefficients a, b)
    names: list[str] = []
    for k, c in enumerate(problem.constraints):
        idx = np.asarray(c.indices, dtype=np.int64)
        if c.is_cardinality:
            terms.append((idx, np.ones(len(idx)), float(c.equals)))
            continue
        delta, lower, coeffs = band_encoding(c)
        label = c.name or f"constraint{k}"
        slack_idx = np.arange(n + len(names), n + len(names) + len(coeffs), dtype=np.int64)
        names += [f"{label}:slack{t}" for t in range(len(coeffs))]
        terms.append((np.concatenate([idx, slack_idx]),
                      np.concatenate([c.weight_array() / delta, -np.asarray(coeffs, dtype=np.float64)]),
                      lower / delta))
    size = n + len(names)
    lin = np.zeros(size)
    lin[:n] = problem.linear
    Q = np.zeros((size, size))
    Q[:n, :n] = problem.quadratic
    offset = float(problem.offset)
    P = float(penalty)
    for idx, a, b in terms:  # P (a·z − b)² = P zᵀ(a aᵀ)z − 2 P b a·z + P b²
        Q[np.ix_(idx, idx)] += P * np.outer(a, a)
        lin[idx] -= 2 * P * b * a
        offset += P * b * b
    return BinaryQuadraticProblem(variables=list(problem.variables) + names, linear=lin, quadratic=Q, offset=offset,
                                  constraints=[], metadata={**problem.metadata, "slack_bits": len(names)})


def project(states: np.ndarray, n: int) -> np.ndarray:
    """The original variables of slack-form states (the first ``n`` columns)."""
    return np.atleast_2d(np.asarray(states))[:, :n]
