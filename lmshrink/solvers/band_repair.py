"""Repair into, and descent within, weighted bands ``L ≤ Σ_{i∈c} w_i x_i ≤ U`` (the band part of
:mod:`lmshrink.solvers.repair`).

**Repair** of one group of one state, greedy by energy change per unit of weight (``Δ_i`` the exact one-flip change
``(1 − 2x_i)(l_i + Q_ii + 2 Σ_{j≠i} Q_ij x_j)``):

    while the weighted sum s is above U: switch off the 1 of smallest Δ_i / w_i, preferring those that do not
        take s below L;
    while s is below L: switch on the 0 of smallest Δ_j / w_j, preferring those that do not take s above U;

and where that ends outside the band (the band is narrower than the weights), the best single swap that lands in
it, then any band state built from the subset sums (integer weights). **Descent** takes the best improving move
that keeps every band: a flip of one variable of a band group, a swap (one 1 off, one 0 on, sum ``s − w_i + w_j``),
a swap in a cardinality group, a flip of a free variable, until none is left.
"""

from __future__ import annotations

import math

import numpy as np

from ..core import BinaryQuadraticProblem, Constraint


def _inside(c: Constraint, s: np.ndarray | float) -> np.ndarray:
    tol = c.tolerance()
    ok = np.ones(np.shape(s), dtype=bool)
    if c.lower is not None:
        ok &= np.asarray(s) >= c.lower - tol
    if c.upper is not None:
        ok &= np.asarray(s) <= c.upper + tol
    return ok


def band_state(c: Constraint) -> np.ndarray | None:
    """Some 0/1 pattern of ``c``'s variables (in the order of ``c.indices``) inside its band, from the subset sums
    of its integer weights (a bitset per prefix, then a walk back); None for weights that are not non-negative
    integers of modest size."""
    w = c.weight_array()
    if (w < 0).any() or not np.all(w == np.rint(w)):
        return None
    ints = [int(v) for v in w]
    g = 0
    for v in ints:
        g = math.gcd(g, v)
    if g == 0:
        return np.zeros(len(w), dtype=np.int8) if _inside(c, 0.0) else None
    scaled = [v // g for v in ints]
    if sum(scaled) > 1 << 22:
        return None
    reach = [1]  # reach[t] bit s: the first t variables can sum to s·g
    for v in scaled:
        reach.append(reach[-1] | (reach[-1] << v))
    target = next((s for s in range(sum(scaled) + 1) if (reach[-1] >> s) & 1 and _inside(c, float(s * g))), None)
    if target is None:
        return None
    x = np.zeros(len(w), dtype=np.int8)
    for t in range(len(scaled), 0, -1):  # variable t−1 is on when the rest cannot reach the target without it
        if not (reach[t - 1] >> target) & 1:
            x[t - 1] = 1
            target -= scaled[t - 1]
    return x


def repair_band_row(lin: np.ndarray, Q: np.ndarray, x: np.ndarray, c: Constraint) -> bool:
    """Bring one state ``x`` (float 0/1, changed in place) into the band of ``c`` (module docstring); returns whether
    it is inside afterwards."""
    idx = np.asarray(c.indices, dtype=np.int64)
    w = c.weight_array()
    qd = np.diag(Q)

    def deltas() -> np.ndarray:
        xi = x[idx]
        return (1 - 2 * xi) * (lin[idx] + qd[idx] + 2 * (Q[idx] @ x) - 2 * qd[idx] * xi)

    lo = -np.inf if c.lower is None else c.lower - c.tolerance()
    hi = np.inf if c.upper is None else c.upper + c.tolerance()
    for _ in range(2 * len(idx) + 2):
        s = float(x[idx] @ w)
        if lo <= s <= hi:
            return True
        d = deltas()
        on = x[idx] == 1
        if s > hi:
            movable, new = on & (w > 0), s - w
            keeps = movable & (new >= lo)
        else:
            movable, new = ~on & (w > 0), s + w
            keeps = movable & (new <= hi)
        pool = keeps if keeps.any() else movable
        if not pool.any():
            break
        score = np.where(pool, d / np.where(w > 0, w, 1.0), np.inf)
        x[idx[int(np.argmin(score))]] = 1 - x[idx[int(np.argmin(score))]]
    s = float(x[idx] @ w)
    if lo <= s <= hi:
        return True
    # one swap that lands inside the band, the lowest energy change
    d = deltas()
    on = x[idx] == 1
    pair = d[:, None] + d[None, :] - 2 * Q[np.ix_(idx, idx)]
    new = s - w[:, None] + w[None, :]
    ok = on[:, None] & ~on[None, :] & (new >= lo) & (new <= hi)
    if ok.any():
        k = int(np.argmin(np.where(ok, pair, np.inf)))
        i, j = divmod(k, len(idx))
        x[idx[i]], x[idx[j]] = 0, 1
        return True
    fallback = band_state(c)
    if fallback is None:
        return False
    x[idx] = fallback
    return True


def repair_bands(problem: BinaryQuadraticProblem, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every band group of every row of the float (k, N) matrix ``X`` repaired in place; returns (changed, inside)
    per row."""
    lin, Q = problem.linear, problem.quadratic
    changed = np.zeros(len(X), dtype=bool)
    inside = np.ones(len(X), dtype=bool)
    for c in problem.constraints:
        if c.is_cardinality:
            continue
        before = c.satisfied(X)
        for r in np.flatnonzero(~before):
            inside[r] &= repair_band_row(lin, Q, X[r], c)
            changed[r] = True
    return changed, inside


def best_band_moves(lin: np.ndarray, Q: np.ndarray, c: Constraint, X: np.ndarray,
                    F: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of feasible ``X`` (float, field ``F = 2XQ``): the lowest energy change of a band-keeping move in
    group ``c`` (a flip, or a swap of a 1 and a 0) and its variables (i, j); j = −1 for a flip."""
    idx = np.asarray(c.indices, dtype=np.int64)
    w = c.weight_array()
    qd = np.diag(Q)
    xg = X[:, idx]
    d = (1 - 2 * xg) * (lin[idx] + qd[idx] + F[:, idx] - 2 * qd[idx] * xg)
    s = xg @ w
    lo = -np.inf if c.lower is None else c.lower - c.tolerance()
    hi = np.inf if c.upper is None else c.upper + c.tolerance()
    flip_sum = s[:, None] + (1 - 2 * xg) * w
    flip = np.where((flip_sum >= lo) & (flip_sum <= hi), d, np.inf)
    n = len(idx)
    best = np.empty(len(X))
    bi = np.empty(len(X), dtype=np.int64)
    bj = np.empty(len(X), dtype=np.int64)
    Qg = Q[np.ix_(idx, idx)]
    step = max(1, (1 << 22) // max(n * n, 1))
    for a in range(0, len(X), step):
        sl = slice(a, a + step)
        on = xg[sl] == 1
        new = s[sl, None, None] - w[None, :, None] + w[None, None, :]
        ok = on[:, :, None] & ~on[:, None, :] & (new >= lo) & (new <= hi)
        pair = np.where(ok, d[sl, :, None] + d[sl, None, :] - 2 * Qg[None], np.inf).reshape(len(on), -1)
        k = np.argmin(pair, axis=1)
        r = np.arange(len(on))
        pk = pair[r, k]
        fk = np.argmin(flip[sl], axis=1)
        fv = flip[sl][r, fk]
        use_flip = fv <= pk
        best[sl] = np.where(use_flip, fv, pk)
        bi[sl] = np.where(use_flip, idx[fk], idx[k // n])
        bj[sl] = np.where(use_flip, -1, idx[k % n])
    return best, bi, bj
