"""Seeded random problems shared by the solver tests (no test collected here)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lmshrink.core import BinaryQuadraticProblem, Constraint


def random_problem(
    groups: Sequence[tuple[int, int]],
    *,
    free: int = 0,
    seed: int = 0,
    linear: bool = True,
    name: str = "random",
) -> BinaryQuadraticProblem:
    """A dense problem with mixed-sign couplings: ``groups`` lists (size, equals) per constraint, then ``free`` vars.

    The variables of the groups come first, in order, the free ones last; the variable order is then shuffled so
    the groups are not contiguous.
    """
    rng = np.random.default_rng(seed)
    n = sum(size for size, _ in groups) + free
    A = rng.normal(size=(n, n))
    Q = (A + A.T) / 2
    lin = rng.normal(size=n) if linear else np.zeros(n)
    perm = rng.permutation(n)
    constraints, start = [], 0
    for k, (size, m) in enumerate(groups):
        constraints.append(Constraint(tuple(sorted(perm[start : start + size].tolist())), m, f"group{k}"))
        start += size
    return BinaryQuadraticProblem(
        variables=[f"v{i}" for i in range(n)],
        linear=lin,
        quadratic=Q,
        offset=float(rng.normal()),
        constraints=constraints,
        metadata={"generator": name, "seed": seed},
    )


def fisher_problem(
    n: int,
    m: int,
    *,
    seed: int = 0,
    samples: int | None = None,
    kinds: int = 1,
    spread: float = 1.0,
    shared: float = 0.0,
) -> BinaryQuadraticProblem:
    """A block-removal problem like lmshrink's Fisher objective: H = AᵀA / s from random per-sample gradients.

    Block ``i`` has scale ``exp(spread · N(0, 1))`` (unequal blocks), ``s = samples`` (default 2N) gradient rows;
    ``shared > 0`` adds a common direction per sample (strong couplings of either sign, harder). With
    ``kinds > 1`` the blocks alternate between kinds and each kind gets its own cardinality ``m // kinds``.
    """
    rng = np.random.default_rng(seed)
    s = samples or 2 * n
    scales = np.exp(spread * rng.normal(size=n))
    A = rng.normal(size=(s, n)) * scales
    if shared:
        # a shared direction per sample: correlated blocks, with strong couplings of either sign (a harder problem)
        A += shared * np.outer(rng.normal(size=s), rng.normal(size=n) * scales)
    H = A.T @ A / s
    if kinds == 1:
        constraints = [Constraint(tuple(range(n)), m, "blocks")]
    else:
        constraints = [
            Constraint(tuple(range(k, n, kinds)), m // kinds, f"kind{k}") for k in range(kinds)
        ]
    return BinaryQuadraticProblem(
        variables=[f"block{i}" for i in range(n)],
        linear=np.zeros(n),
        quadratic=H,
        constraints=constraints,
        metadata={"generator": "fisher", "seed": seed},
    )


def brute_force(problem: BinaryQuadraticProblem) -> tuple[float, np.ndarray]:
    """The lowest energy over all 2^N vectors that satisfy the constraints, and the energies of all of them."""
    n = problem.num_variables
    X = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(np.int8)
    feasible = np.array([problem.is_feasible(x) for x in X])
    E = problem.energies(X[feasible])
    return float(E.min()), np.sort(E)
