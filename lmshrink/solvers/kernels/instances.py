"""Seeded instance families on which "greedy + swap descent" fails, for telling solvers apart.

The Fisher-like problems ``H = AᵀA/s`` with unequal block scales are easy: the M smallest diagonal entries plus
one swap descent give the optimum. Two families that are not:

- :func:`planted_problem`: ``E(x) = (x − x*)ᵀ A (x − x*)`` with ``A = BᵀB/r + εI`` positive definite, so ``x*``
  (M_g ones per group) is the unique optimum, at energy 0, by construction. The form is then disguised by the
  shift of :func:`lmshrink.solvers.kernels.topk.reformulate` (``Q_jk += u_j + u_k`` within a group,
  ``l_j −= 2(M_g − 1)u_j``), which leaves every feasible energy unchanged but makes the planted variables look
  expensive on the diagonal, so greedy starts far from x*.
- :func:`low_spread_problem`: Fisher-like with nearly equal block scales (``spread`` ≈ 0.1) and a shared
  per-sample direction of strength ``shared``: strong couplings of either sign decide the optimum, not the
  diagonal.
"""

from __future__ import annotations

import numpy as np

from ...core import BinaryQuadraticProblem, Constraint
from .layout import make_layout
from .topk import reformulate


def _groups(n: int, m: int, kinds: int) -> list[Constraint]:
    """One constraint over all, or ``kinds`` interleaved groups with m // kinds ones each."""
    if kinds == 1:
        return [Constraint(tuple(range(n)), m, "blocks")]
    return [Constraint(tuple(range(k, n, kinds)), m // kinds, f"kind{k}") for k in range(kinds)]


def planted_problem(n: int, m: int, *, seed: int = 0, rank: int | None = None, epsilon: float = 0.05,
                    disguise: float = 1.0, kinds: int = 1) -> BinaryQuadraticProblem:
    """A problem whose unique optimum ``x*`` (in ``metadata["planted"]``) has energy 0 (see the module docstring).

    ``rank`` (default n // 4) sets how many directions ``B`` has: a low rank makes many states nearly as good;
    ``disguise`` scales the shift that hides x* from greedy (0: none).
    """
    rng = np.random.default_rng(seed)
    r = rank or max(2, n // 4)
    B = rng.normal(size=(r, n))
    A = B.T @ B / r + epsilon * np.eye(n)
    constraints = _groups(n, m, kinds)
    x = np.zeros(n)
    for c in constraints:
        x[rng.choice(np.array(c.indices), c.equals, replace=False)] = 1
    # (x − x*)ᵀA(x − x*) = xᵀAx − 2(Ax*)·x + x*ᵀAx*
    lin, Q, offset = -2 * A @ x, A.copy(), float(x @ A @ x)
    if disguise:
        lay = make_layout(n, [c.indices for c in constraints], [c.equals for c in constraints])
        a = lin + np.diag(A)
        # u_j < 0 on the planted variables raises their diagonal a_j = l_j + Q_jj by about the gap to the others
        gap = np.median(a[x == 0]) - np.median(a[x == 1])
        mg = max(m // kinds, 2)
        u = -disguise * x * gap / (2 * (mg - 1)) * (1 + 0.2 * rng.normal(size=n))
        a2, Q = reformulate(a, A, lay, u)
        lin = a2 - np.diag(Q)
    return BinaryQuadraticProblem(
        variables=[f"v{i}" for i in range(n)], linear=lin, quadratic=Q, offset=offset, constraints=constraints,
        metadata={"generator": "planted", "seed": seed, "rank": r, "epsilon": epsilon, "disguise": disguise,
                  "planted": np.flatnonzero(x).tolist(), "optimum": 0.0},
    )


def low_spread_problem(n: int, m: int, *, seed: int = 0, spread: float = 0.1, shared: float = 1.0,
                       samples: int | None = None, kinds: int = 1) -> BinaryQuadraticProblem:
    """Fisher-like ``H = AᵀA/s`` (s = 2N rows) with block scales ``exp(spread·N(0,1))`` and a shared direction
    per sample of strength ``shared``; minimise xᵀHx with exactly m ones (per kind when ``kinds > 1``)."""
    rng = np.random.default_rng(seed)
    s = samples or 2 * n
    scales = np.exp(spread * rng.normal(size=n))
    A = rng.normal(size=(s, n)) * scales
    A += shared * np.outer(rng.normal(size=s), rng.normal(size=n) * scales)
    return BinaryQuadraticProblem(
        variables=[f"block{i}" for i in range(n)], linear=np.zeros(n), quadratic=A.T @ A / s,
        constraints=_groups(n, m, kinds),
        metadata={"generator": "low-spread", "seed": seed, "spread": spread, "shared": shared, "samples": s},
    )
