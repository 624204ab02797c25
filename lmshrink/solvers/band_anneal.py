"""Simulated annealing that stays inside weighted bands ``L ≤ Σ_{i∈c} w_i x_i ≤ U`` (the ``anneal`` solver's path
for problems with a parameter budget), vectorised over reads in numpy.

Every read starts from a random state repaired into every constraint (:func:`lmshrink.solvers.repair.repair`:
greedy by energy change per unit of weight). A step picks a mover (a group with probability ∝ its size, the free
variables together as one) and, per read, a move in it:

- in a band group, with probability 1/2 a flip of one random variable, else a flip of two (a swap when one is 1
  and the other 0), **proposed only when the new weighted sum stays in the band**;
- in a cardinality group, a flip of two random variables, valid when one is 1 and the other 0 (a Kawasaki swap);
- a free variable, a flip.

A flip set ``S`` changes the energy by ``Σ_{i∈S} Δ_i + 2 Σ_{i<j∈S} Q_ij δ_i δ_j`` (``δ_i = 1 − 2x_i``,
``Δ_i = δ_i (l_i + Q_ii + F_i − 2Q_ii x_i)``, ``F = 2Qx``); a valid move is accepted with the Metropolis rule at
β rising geometrically from β_hot (a typical uphill flip accepted half the time) to β_cold (the smallest accepted
1% of the time). Every read then descends to a local minimum of the same moves
(:func:`lmshrink.solvers.repair.swap_descent`), so every state returned satisfies every band.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..core import BinaryQuadraticProblem, LmshrinkError
from .repair import repair, swap_descent


def keep_best(x: np.ndarray, energy: np.ndarray, best_x: np.ndarray, best_e: np.ndarray) -> None:
    """Record in ``best_x``/``best_e`` (in place) each read whose state ``x`` is lower than its best so far."""
    better = energy < best_e - 1e-12
    if better.any():
        best_x[better] = x[better]
        best_e[better] = energy[better]


def _movers(problem: BinaryQuadraticProblem) -> list[tuple[str, np.ndarray, np.ndarray, float, float]]:
    """(kind, indices, weights, lower, upper) per mover: "band", "card" (a cardinality with room to move), "free"."""
    out = []
    for c in problem.constraints:
        idx = np.asarray(c.indices, dtype=np.int64)
        lo = -np.inf if c.lower is None else c.lower - c.tolerance()
        hi = np.inf if c.upper is None else c.upper + c.tolerance()
        if not c.is_cardinality:
            out.append(("band", idx, c.weight_array(), lo, hi))
        elif 0 < c.equals < len(idx):
            out.append(("card", idx, np.ones(len(idx)), lo, hi))
    free = np.asarray(problem.free_indices, dtype=np.int64)
    if len(free):
        out.append(("free", free, np.ones(len(free)), -np.inf, np.inf))
    return out


def _beta_range(problem: BinaryQuadraticProblem, X: np.ndarray, F: np.ndarray) -> tuple[float, float]:
    """β_hot accepts the median one-flip change with probability 1/2, β_cold the smallest with 1/100."""
    qd = np.diag(problem.quadratic)
    d = np.abs((1 - 2 * X) * (problem.linear + qd + F - 2 * qd * X)).ravel()
    d = d[d > 1e-12 * max(d.max(initial=0.0), 1e-300)]
    if d.size == 0:
        return 1.0, 10.0
    hot = np.log(2) / np.median(d)
    return float(hot), float(max(np.log(100) / d.min(), 10 * hot))


def anneal_bands(problem: BinaryQuadraticProblem, *, num_reads: int, num_sweeps: int, seed: int | None,
                 time_limit: float | None, beta_range: tuple[float, float] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """(final states, energies, best states seen, energies, info) of ``num_reads`` reads (module docstring)."""
    deadline = None if time_limit is None else time.perf_counter() + float(time_limit)
    rng = np.random.default_rng(seed)
    n, R = problem.num_variables, int(num_reads)
    lin, Q = problem.linear, problem.quadratic
    qd = np.diag(Q)
    X, _ = repair(problem, rng.integers(0, 2, size=(R, n)))
    ok = problem.feasible_rows(X)
    if not ok.any():
        raise LmshrinkError("anneal could not build a state inside the problem's weighted bands (their weights are "
                            "not integers it can take subset sums of); use exact or milp.")
    X = X[np.where(ok, np.arange(R), np.flatnonzero(ok)[0])].astype(np.float64)  # infeasible starts: a feasible one
    F = 2 * X @ Q
    energy = problem.energies(X)
    best_x, best_e = X.copy(), energy.copy()
    info: dict[str, Any] = {"num_reads": R, "num_sweeps": int(num_sweeps)}
    movers = _movers(problem)
    if not movers:
        info["note"] = "every variable is fixed by the constraints"
        return X.astype(np.int8), energy, best_x.astype(np.int8), best_e, info
    sums = [X[:, idx] @ w for _, idx, w, _, _ in movers]
    p = np.array([len(idx) for _, idx, _, _, _ in movers], dtype=float)
    p /= p.sum()
    hot, cold = beta_range if beta_range is not None else _beta_range(problem, X, F)
    steps = max(int(num_sweeps) * n, 1)
    ratio = (cold / hot) ** (1.0 / max(steps - 1, 1))
    rows = np.arange(R)
    chunk, done = 1024, steps
    for t in range(steps):
        if t % chunk == 0:
            if deadline is not None and time.perf_counter() > deadline:
                info["stopped_early"], done = True, t
                break
            size = min(chunk, steps - t)
            choice = rng.choice(len(movers), size=size, p=p)
            u = np.log(rng.random((size, R)))
            coin = rng.random((size, R)) < 0.5
        c = t % chunk
        m = choice[c]
        kind, idx, w, lo, hi = movers[m]
        a = rng.integers(0, len(idx), R)
        i = idx[a]
        xi = X[rows, i]
        di = 1 - 2 * xi
        delta = di * (lin[i] + qd[i] + F[rows, i] - 2 * qd[i] * xi)
        ds = di * w[a]
        if kind == "free":
            pair = np.zeros(R, dtype=bool)
        else:
            b = rng.integers(0, len(idx), R)
            pair = (b != a) & (~coin[c] if kind == "band" else True)
            j = idx[b]
            xj = X[rows, j]
            dj = 1 - 2 * xj
            dj_e = dj * (lin[j] + qd[j] + F[rows, j] - 2 * qd[j] * xj) + 2 * Q[i, j] * di * dj
            delta = np.where(pair, delta + dj_e, delta)
            ds = np.where(pair, ds + dj * w[b], ds)
        new = sums[m] + ds
        valid = (new >= lo) & (new <= hi)
        beta = hot * ratio**t
        acc = valid & (-beta * delta > u[c])
        if not acc.any():
            continue
        r = rows[acc]
        X[r, i[acc]] += di[acc]
        F[r] += 2 * di[acc, None] * Q[i[acc]]
        pr = acc & pair
        if pr.any():
            rp = rows[pr]
            X[rp, j[pr]] += dj[pr]
            F[rp] += 2 * dj[pr, None] * Q[j[pr]]
        sums[m] = np.where(acc, new, sums[m])
        energy = energy + np.where(acc, delta, 0.0)
        keep_best(X, energy, best_x, best_e)
    info.update(beta_range=[float(hot), float(cold)], sweeps_done=done // n)
    quenched = swap_descent(problem, X)
    quenched_e = problem.energies(quenched)
    better = quenched_e < best_e
    best_x[better], best_e[better] = quenched[better], quenched_e[better]
    best_e = problem.energies(best_x)  # recomputed: no drift from the running sums
    return quenched, quenched_e, best_x.astype(np.int8), best_e, info
