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

Both functions are vectorized over the rows of a (k, N) state matrix and are deterministic.
"""

from __future__ import annotations

import numpy as np

from ..core import BinaryQuadraticProblem, LmshrinkError


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
    return X.astype(np.int8), changed


def swap_descent(problem: BinaryQuadraticProblem, states: np.ndarray, max_steps: int | None = None) -> np.ndarray:
    """Best-improvement descent by constraint-preserving moves until each row is a 1-swap local minimum.

    A swap of ``i`` (a 1) and ``j`` (a 0) in one group changes the energy by
    ``Δ = −(l_i − Q_ii + F_i) + (l_j + Q_jj + F_j) − 2 Q_ij`` with ``F = 2 Q x`` (the same formula the ``anneal``
    solver uses); a free variable moves by a single flip. Rows must already be feasible; they stay feasible.
    """
    X = np.array(np.atleast_2d(states), dtype=np.float64)
    n = problem.num_variables
    lin, Q = problem.linear, problem.quadratic
    qd = np.diag(Q)
    groups = [np.array(c.indices, dtype=np.int64) for c in problem.constraints if 0 < c.equals < len(c.indices)]
    free = np.array(problem.free_indices, dtype=np.int64)
    F = 2 * X @ Q
    active = np.ones(len(X), dtype=bool)
    steps = max_steps if max_steps is not None else 10 * n + 10
    for _ in range(steps):
        if not active.any():
            break
        r = np.flatnonzero(active)
        best = np.zeros(len(r))
        move_i = np.full(len(r), -1)
        move_j = np.full(len(r), -1)
        Xr, Fr = X[r], F[r]
        for g in groups:
            xg = Xr[:, g]
            off = -(lin[g] - qd[g] + Fr[:, g])  # Δ of switching i off (valid where x_i = 1)
            on = lin[g] + qd[g] + Fr[:, g]  # Δ of switching j on (valid where x_j = 0), before the −2Q_ij term
            d = off[:, :, None] + on[:, None, :] - 2 * Q[np.ix_(g, g)][None]
            valid = (xg[:, :, None] == 1) & (xg[:, None, :] == 0)
            d = np.where(valid, d, np.inf).reshape(len(r), -1)
            k = np.argmin(d, axis=1)
            dk = d[np.arange(len(r)), k]
            better = dk < best - 1e-12 * (1 + np.abs(best))
            best = np.where(better, dk, best)
            move_i = np.where(better, g[k // len(g)], move_i)
            move_j = np.where(better, g[k % len(g)], move_j)
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


def best_feasible_energy(problem: BinaryQuadraticProblem, states: np.ndarray) -> float | None:
    """Lowest energy among the rows that already satisfy every constraint (None if none does)."""
    ok = [problem.is_feasible(x) for x in np.atleast_2d(states)]
    return float(problem.energies(np.atleast_2d(states)[ok]).min()) if any(ok) else None


def repair_and_polish(
    problem: BinaryQuadraticProblem, states: np.ndarray, polish: bool, num_solutions: int = 1
) -> tuple[np.ndarray, dict[str, int]]:
    """:func:`repair` every row, then :func:`swap_descent` when ``polish``; returns the states and counts.

    With ``polish`` the repaired rows are kept next to the polished ones (both are valid candidates) and, when
    more than one solution is asked for, the one-swap neighbours of the ``num_solutions`` best states are added
    (``anneal``'s :func:`~lmshrink.solvers.anneal.swap_neighbours`): reads tend to descend into the same few minima,
    and their neighbours are the low-lying alternatives a ranked list needs. Without ``polish`` the neighbours are
    added only when the reads give fewer than ``num_solutions`` distinct states, so a top-k list is always filled.
    """
    fixed, changed = repair(problem, states)
    info = {"num_repaired": int(changed.sum())}
    out = fixed
    if polish:
        before = problem.energies(fixed)
        polished = swap_descent(problem, fixed)
        info["num_polished"] = int((problem.energies(polished) < before - 1e-12 * (1 + np.abs(before))).sum())
        out = np.concatenate([polished, fixed])
    if num_solutions > 1 and (polish or len(np.unique(out, axis=0)) < num_solutions):
        from .anneal import swap_neighbours

        out = np.concatenate([out, swap_neighbours(problem, out, num_solutions).astype(out.dtype)])
    return out, info


def check_choice(solver: str, option: str, value: object, choices: tuple) -> None:
    """Reject an option value outside ``choices`` (checked here rather than by ``Option.choices``, which the
    command line's name-only check would trip over)."""
    if value not in choices:
        raise LmshrinkError(f"Solver {solver!r} option {option}={value!r} must be one of {list(choices)}.")
