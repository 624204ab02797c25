"""Shared post-processing of sampled states: greedy repair to feasibility and a swap descent that keeps it.

Samplers that see the constraints only as a penalty (``dwave``, ``tabu``, ``qaoa`` with the X mixer) can return
states that break a cardinality constraint. :func:`repair` fixes them with one deterministic greedy rule:

    while some group c has Σ_{i∈c} x_i ≠ M_c:
        if it has too many ones, switch off the one of that group whose removal raises the energy least;
        if it has too few, switch on the zero of that group whose addition raises the energy least.

Each step is a single flip with the exact energy change ``Δ_i = (1 − 2x_i)(l_i + Q_ii + 2 Σ_{j≠i} Q_ij x_j)``, so
the repaired state is the greedy (best-first) completion of the sample; variables in no constraint are never
touched. :func:`swap_descent` then optionally walks downhill by moves that keep every constraint: a swap of a 1
and a 0 in the same group, or a single flip of a free variable, taking the best improving move until none is left
(a 1-swap local minimum).

Weighted bands ``L ≤ Σ w·x ≤ U`` (parameter budgets) are repaired greedily by energy change per unit of weight, and
the descent moves inside them by flips and swaps that keep the weighted sum in the band
(:mod:`lmshrink.solvers.band_repair`); :func:`repair` reports rows it could not bring into a band through
``was_repaired`` and leaves them infeasible (callers keep only feasible rows).

Both functions are vectorized over the rows of a (k, N) state matrix and are deterministic; the composite that
applies them to any solver's samples is :class:`lmshrink.solvers.composites.RepairComposite`.
"""

from __future__ import annotations

import time

import numpy as np

from ..core import BinaryQuadraticProblem
from .band_repair import best_band_moves, repair_bands


def _flip_deltas(lin: np.ndarray, Q: np.ndarray, X: np.ndarray, F: np.ndarray) -> np.ndarray:
    """Energy change of flipping each variable of each row: (1 − 2x)(l + Q_ii + F − 2 Q_ii x), F = 2 X Q."""
    qd = np.diag(Q)
    return (1 - 2 * X) * (lin + qd + F - 2 * qd * X)


def repair(problem: BinaryQuadraticProblem, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedily make every row feasible (see the module docstring).

    Returns ``(repaired, was_repaired)``: the (k, N) int8 matrix of feasible states and a boolean per row telling
    whether that row needed at least one flip.
    """
    X = np.array(np.rint(np.atleast_2d(states)), dtype=np.float64)
    if X.shape[1] != problem.num_variables:
        raise ValueError(f"states have {X.shape[1]} columns for {problem.num_variables} variables")
    X = np.clip(X, 0, 1)
    lin, Q = problem.linear, problem.quadratic
    rows = np.arange(len(X))
    changed = np.zeros(len(X), dtype=bool)
    F = 2 * X @ Q
    for c in problem.constraints:
        if not c.is_cardinality:
            continue
        idx = np.array(c.indices, dtype=np.int64)
        while True:
            excess = X[:, idx].sum(axis=1) - c.equals
            todo = excess != 0
            if not todo.any():
                break
            r = rows[todo]
            delta = _flip_deltas(lin, Q, X[r], F[r])[:, idx]
            # only flips toward feasibility are allowed: ones when there are too many, zeros when too few
            allowed = np.where(excess[todo, None] > 0, X[r][:, idx] == 1, X[r][:, idx] == 0)
            delta = np.where(allowed, delta, np.inf)
            k = idx[np.argmin(delta, axis=1)]
            sign = 1 - 2 * X[r, k]
            X[r, k] += sign
            F[r] += 2 * sign[:, None] * Q[k]
            changed[r] = True
    if problem.has_weighted_constraints:
        band_changed, _ = repair_bands(problem, X)
        changed |= band_changed
    return X.astype(np.int8), changed


def swap_descent(problem: BinaryQuadraticProblem, states: np.ndarray, max_steps: int | None = None,
                 deadline: float | None = None) -> np.ndarray:
    """Best-improvement descent by constraint-preserving moves until each row is a 1-swap local minimum.

    A swap of ``i`` (a 1) and ``j`` (a 0) in one group changes the energy by
    ``Δ = −(l_i − Q_ii + F_i) + (l_j + Q_jj + F_j) − 2 Q_ij`` with ``F = 2 Q x`` (the same formula the ``anneal``
    solver uses); a free variable moves by a single flip. Rows must already be feasible; they stay feasible.
    Ties go to the first pair (i, j) in the group's order. Memory stays bounded: each step looks at one
    (ones × zeros) table per row of a group, a few rows at a time, never at a (rows × N × N) array. With a
    ``deadline`` (``time.perf_counter()`` seconds) the descent stops after the step that passes it.
    """
    X = np.array(np.atleast_2d(states), dtype=np.float64)
    n = problem.num_variables
    lin, Q = problem.linear, problem.quadratic
    qd = np.diag(Q)
    groups = [(np.array(c.indices, dtype=np.int64), c.equals) for c in problem.constraints
              if c.is_cardinality and 0 < c.equals < len(c.indices)]
    bands = [c for c in problem.constraints if not c.is_cardinality]
    free = np.array(problem.free_indices, dtype=np.int64)
    F = 2 * X @ Q
    active = np.ones(len(X), dtype=bool)
    steps = max_steps if max_steps is not None else 10 * n + 10
    for _ in range(steps):
        if not active.any() or (deadline is not None and time.perf_counter() > deadline):
            break
        r = np.flatnonzero(active)
        best = np.zeros(len(r))
        move_i = np.full(len(r), -1)
        move_j = np.full(len(r), -1)
        Xr, Fr = X[r], F[r]
        for g, m in groups:
            dk, i, j = _best_swaps(lin, Q, qd, g, m, Xr, Fr)
            better = dk < best - 1e-12 * (1 + np.abs(best))
            best = np.where(better, dk, best)
            move_i = np.where(better, i, move_i)
            move_j = np.where(better, j, move_j)
        for c in bands:  # flips and swaps that keep the weighted sum in the band
            dk, i, j = best_band_moves(lin, Q, c, Xr, Fr)
            better = dk < best - 1e-12 * (1 + np.abs(best))
            best = np.where(better, dk, best)
            move_i = np.where(better, i, move_i)
            move_j = np.where(better, j, move_j)
        if len(free):
            xf = Xr[:, free]
            d = (1 - 2 * xf) * (lin[free] + qd[free] + Fr[:, free] - 2 * qd[free] * xf)
            k = np.argmin(d, axis=1)
            dk = d[np.arange(len(r)), k]
            better = dk < best - 1e-12 * (1 + np.abs(best))
            best = np.where(better, dk, best)
            move_i = np.where(better, free[k], move_i)
            move_j = np.where(better, -1, move_j)
        moved = move_i >= 0
        active[r[~moved]] = False
        for rr, i, j in zip(r[moved], move_i[moved], move_j[moved]):
            s = 1 - 2 * X[rr, i]
            X[rr, i] += s
            F[rr] += 2 * s * Q[i]
            if j >= 0:
                X[rr, j] = 1
                F[rr] += 2 * Q[j]
    return X.astype(np.int8)


def _best_swaps(lin: np.ndarray, Q: np.ndarray, qd: np.ndarray, g: np.ndarray, m: int, X: np.ndarray,
                F: np.ndarray, budget: int = 1 << 22) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the lowest swap Δ in group ``g`` (``m`` ones) and its pair (i, j), first pair on ties.

    The ones and zeros of each row are listed in the group's order, so scanning the (ones × zeros) table row-major
    meets the pairs in the same order as a scan of the full (g × g) table would.
    """
    xg = X[:, g]
    pos = np.argsort(-xg, axis=1, kind="stable")  # the ones first, each part in group order
    ones, zeros = pos[:, :m], pos[:, m:]
    rows = np.arange(len(X))[:, None]
    off = -(lin[g] - qd[g] + F[:, g])  # Δ of switching i off (valid where x_i = 1)
    on = lin[g] + qd[g] + F[:, g]  # Δ of switching j on (valid where x_j = 0), before the −2Q_ij term
    best = np.empty(len(X))
    bi = np.empty(len(X), dtype=np.int64)
    bj = np.empty(len(X), dtype=np.int64)
    step = max(1, budget // max(m * (len(g) - m), 1))
    for a in range(0, len(X), step):
        sl = slice(a, a + step)
        A, B = g[ones[sl]], g[zeros[sl]]
        d = off[rows[sl], ones[sl]][:, :, None] + on[rows[sl], zeros[sl]][:, None, :] - 2 * Q[A[:, :, None], B[:, None, :]]
        valid = (xg[rows[sl], ones[sl]] == 1)[:, :, None] & (xg[rows[sl], zeros[sl]] == 0)[:, None, :]
        d = np.where(valid, d, np.inf).reshape(len(A), -1)
        k = np.argmin(d, axis=1)
        r = np.arange(len(A))
        best[sl] = d[r, k]
        bi[sl] = A[r, k // zeros.shape[1]]
        bj[sl] = B[r, k % zeros.shape[1]]
    return best, bi, bj
