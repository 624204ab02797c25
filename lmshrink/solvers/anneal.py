"""``anneal``: simulated annealing at fixed magnetization (Kawasaki swap dynamics), vectorized over reads.

Every read starts from a random feasible state. A move in a constrained group swaps a 1 and a 0 of that group, so
Σx stays equal to M at every step: the constraint is kept exactly instead of being added as a penalty. Variables
in no constraint move by single flips. Moves are accepted with the Metropolis rule at inverse temperature β,
raised geometrically from β_hot (a typical uphill move accepted half the time) to β_cold (the smallest uphill move
accepted 1% of the time).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import BinaryQuadraticProblem, RawSummary, Samples, Solver, SolverCapabilities, option
from ..plugins import hookimpl
from .repair import swap_descent


def _swap_delta(problem_lin: np.ndarray, Q: np.ndarray, F: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Energy change of moving a 1 from i to j (x_i = 1, x_j = 0), per read.

    With F = 2 Q x the field, flipping i off changes the energy by −(l_i − Q_ii + F_i) and then flipping j on by
    l_j + Q_jj + F_j − 2 Q_ij.
    """
    r = np.arange(len(i))
    qd = np.diag(Q)
    return (
        problem_lin[j] + qd[j] + F[r, j] - 2 * Q[i, j]
        - (problem_lin[i] - qd[i] + F[r, i])
    )


def _flip_delta(lin: np.ndarray, Q: np.ndarray, F: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Energy change of flipping variable k, per read: (1 − 2x_k)(l_k + Q_kk + F_k − 2 Q_kk x_k)."""
    r = np.arange(len(k))
    xk = x[r, k]
    qd = np.diag(Q)[k]
    return (1 - 2 * xk) * (lin[k] + qd + F[r, k] - 2 * qd * xk)


def swap_neighbours(problem: BinaryQuadraticProblem, states: np.ndarray, count: int,
                    deadline: float | None = None) -> np.ndarray:
    """The ``count`` lowest one-swap (or, for free variables, one-flip) neighbours of the ``count`` lowest distinct
    feasible states, leaving out those already among ``states``.

    Annealing reads tend to meet in a few states; their neighbours are the low-lying excitations a ranked
    candidate list needs. Memory stays bounded by design: each seed's neighbour energies come from the swap formula
    of :func:`_swap_delta` as one (ones × zeros) table per group, and only the few lowest become states (a full
    table of neighbour states would take M(N−M)·count rows). Stops between seeds once ``deadline``
    (``time.perf_counter()`` seconds) has passed.
    """
    n = problem.num_variables
    distinct = np.unique(np.asarray(states, dtype=np.int8), axis=0)
    feasible = distinct[[problem.is_feasible(s) for s in distinct]]
    if len(feasible) == 0 or count < 1:
        return np.zeros((0, n), dtype=np.int8)
    energies = problem.energies(feasible)
    order = np.argsort(energies, kind="stable")[:count]
    known = {row.tobytes() for row in distinct}
    # enough per seed that `count` remain after dropping those already known
    per_seed = count + len(distinct)
    lin, Q = problem.linear, problem.quadratic
    qd = np.diag(Q)
    free = np.array(problem.free_indices, dtype=np.int64)
    pool: dict[bytes, tuple[float, np.ndarray]] = {}
    for s, e0 in zip(feasible[order], energies[order]):
        if deadline is not None and pool and time.perf_counter() > deadline:
            break
        F = 2 * Q @ s.astype(np.float64)
        deltas, moves_i, moves_j = [], [], []
        for c in problem.constraints:
            idx = np.array(c.indices, dtype=np.int64)
            on, off = idx[s[idx] == 1], idx[s[idx] == 0]
            if len(on) == 0 or len(off) == 0:
                continue
            d = (-(lin[on] - qd[on] + F[on]))[:, None] + (lin[off] + qd[off] + F[off])[None, :] - 2 * Q[np.ix_(on, off)]
            d = d.ravel()
            pick = np.argpartition(d, per_seed - 1)[:per_seed] if per_seed < d.size else np.arange(d.size)
            deltas.append(d[pick])
            moves_i.append(on[pick // len(off)])
            moves_j.append(off[pick % len(off)])
        if len(free):
            xf = s[free].astype(np.float64)
            deltas.append((1 - 2 * xf) * (lin[free] + qd[free] + F[free] - 2 * qd[free] * xf))
            moves_i.append(free)
            moves_j.append(np.full(len(free), -1))
        if not deltas:
            continue
        d, mi, mj = np.concatenate(deltas), np.concatenate(moves_i), np.concatenate(moves_j)
        for k in np.argsort(d, kind="stable")[:per_seed]:
            t = s.copy()
            t[mi[k]] ^= 1
            if mj[k] >= 0:
                t[mj[k]] = 1
            key = t.tobytes()
            if key not in known and key not in pool:
                pool[key] = (float(e0 + d[k]), t)
    best = sorted(pool.values(), key=lambda v: v[0])[:count]
    return np.array([t for _, t in best], dtype=np.int8).reshape(-1, n)


@dataclass(frozen=True)
class AnnealOptions:
    num_reads: int = option(32, "independent annealing runs (vectorized)", minimum=1)
    num_sweeps: int = option(1000, "sweeps per read; one sweep is N proposed moves", minimum=1)
    beta_range: tuple[float, float] | None = option(None, "(β_hot, β_cold); default from the problem's energy scale")


class AnnealSolver(Solver):
    """Simulated annealing that keeps every cardinality constraint exactly by swap moves."""

    name = "anneal"
    description = "Simulated annealing with swap moves at fixed magnetization (Kawasaki dynamics)."
    options = AnnealOptions
    capabilities = SolverCapabilities(budget_options={"reads": "num_reads"}, quick_options={"num_sweeps": 300})

    def sample(self, problem: BinaryQuadraticProblem, *, num_solutions: int, seed: int | None,
               time_limit: float | None, options: AnnealOptions) -> Samples:
        deadline = None if time_limit is None else time.perf_counter() + float(time_limit)
        num_sweeps, beta_range = options.num_sweeps, options.beta_range
        rng = np.random.default_rng(seed)
        n = problem.num_variables
        lin, Q = problem.linear, problem.quadratic
        R = options.num_reads
        groups = [np.array(c.indices, dtype=np.int64) for c in problem.constraints]
        groups = [g for g, c in zip(groups, problem.constraints) if 0 < c.equals < len(g)]  # others are fixed
        free = np.array(problem.free_indices, dtype=np.int64)

        x = np.zeros((R, n), dtype=np.int8)
        ones, zeros = [], []
        for g, c in zip([np.array(c.indices) for c in problem.constraints], problem.constraints):
            if c.equals == len(g):
                x[:, g] = 1
        for g in groups:
            m = next(c.equals for c in problem.constraints if c.indices[0] == g[0])
            perm = np.argsort(rng.random((R, len(g))), axis=1)
            picked = g[perm]
            ones.append(picked[:, :m].copy())
            zeros.append(picked[:, m:].copy())
            np.put_along_axis(x, ones[-1], 1, axis=1)
        if len(free):
            x[:, free] = rng.integers(0, 2, size=(R, len(free)))

        F = 2 * x.astype(np.float64) @ Q
        energy = problem.energies(x)
        best_x, best_e = x.copy(), energy.copy()

        # where moves happen: each constrained group with probability ∝ its size, free variables likewise
        movers = [("swap", k, len(g)) for k, g in enumerate(groups)] + ([("flip", -1, len(free))] if len(free) else [])
        if not movers:
            return Samples(x, {"num_reads": R, "note": "every variable is fixed by the constraints"})
        weights = np.array([w for _, _, w in movers], dtype=float)
        weights /= weights.sum()

        hot, cold = beta_range if beta_range is not None else self._beta_range(problem, x, F, ones, zeros, free, rng)
        steps = max(int(num_sweeps) * n, 1)
        ratio = (cold / hot) ** (1.0 / max(steps - 1, 1))  # geometric schedule β_t = β_hot · ratio^t
        rows = np.arange(R)
        stopped_at = None
        chunk = 1024
        for t in range(steps):
            if t % chunk == 0:  # random numbers in chunks: memory stays flat however long the schedule
                if deadline is not None and time.perf_counter() > deadline:
                    stopped_at = t  # out of time: keep the best states found so far
                    break
                size = min(chunk, steps - t)
                choice = rng.choice(len(movers), size=size, p=weights)
                u = np.log(rng.random((size, R)))
            beta = hot * ratio**t
            c = t % chunk
            kind, k, _ = movers[choice[c]]
            if kind == "swap":
                a = rng.integers(0, ones[k].shape[1], R)
                b = rng.integers(0, zeros[k].shape[1], R)
                i, j = ones[k][rows, a], zeros[k][rows, b]
                delta = _swap_delta(lin, Q, F, i, j)
                acc = -beta * delta > u[c]
                if acc.any():
                    r = rows[acc]
                    x[r, i[acc]] = 0
                    x[r, j[acc]] = 1
                    F[r] += 2 * (Q[j[acc]] - Q[i[acc]])
                    ones[k][r, a[acc]] = j[acc]
                    zeros[k][r, b[acc]] = i[acc]
            else:
                kk = free[rng.integers(0, len(free), R)]
                delta = _flip_delta(lin, Q, F, x, kk)
                acc = -beta * delta > u[c]
                if acc.any():
                    r = rows[acc]
                    sign = 1 - 2 * x[r, kk[acc]].astype(np.float64)
                    x[r, kk[acc]] ^= 1
                    F[r] += 2 * sign[:, None] * Q[kk[acc]]
            energy = energy + np.where(acc, delta, 0.0)
            better = energy < best_e - 1e-12
            if better.any():
                best_x[better] = x[better]
                best_e[better] = energy[better]
        info = {"num_reads": R, "num_sweeps": int(num_sweeps), "beta_range": [float(hot), float(cold)]}
        if stopped_at is not None:
            # out of time mid-schedule: the states are still hot; quench them towards 1-swap local minima, with a
            # grace of a quarter of the time limit (at least half a second)
            info["stopped_early_at_sweep"] = stopped_at // n
            grace = time.perf_counter() + max(0.5, 0.25 * float(time_limit))
            quenched = swap_descent(problem, x, deadline=grace)
            info["quench_improved"] = int((problem.energies(quenched) < problem.energies(x) - 1e-12).sum())
            info["quench_complete"] = time.perf_counter() <= grace
            x = quenched
        states = np.concatenate([best_x, x])
        raw = RawSummary.of(problem, states)
        if num_solutions > 1:
            neighbours = swap_neighbours(problem, states, num_solutions, deadline)
            info["num_neighbours"] = len(neighbours)
            states = np.concatenate([states, neighbours])
        return Samples(states, info, raw=raw, stopped_early=stopped_at is not None)

    @staticmethod
    def _beta_range(problem, x, F, ones, zeros, free, rng) -> tuple[float, float]:
        """β_hot accepts a typical uphill move with probability 1/2, β_cold the smallest with 1/100."""
        lin, Q = problem.linear, problem.quadratic
        deltas = []
        rows = np.arange(len(x))
        for k in range(len(ones)):
            for _ in range(8):
                a = rng.integers(0, ones[k].shape[1], len(x))
                b = rng.integers(0, zeros[k].shape[1], len(x))
                deltas.append(_swap_delta(lin, Q, F, ones[k][rows, a], zeros[k][rows, b]))
        if len(free):
            for _ in range(8):
                deltas.append(_flip_delta(lin, Q, F, x, free[rng.integers(0, len(free), len(x))]))
        d = np.abs(np.concatenate(deltas)) if deltas else np.array([1.0])
        d = d[d > 1e-12 * max(d.max(initial=0.0), 1e-300)]
        if d.size == 0:
            return 1.0, 10.0
        hot = np.log(2) / np.median(d)
        cold = np.log(100) / d.min()
        return float(hot), float(max(cold, hot * 10))


@hookimpl
def lmshrink_register_solvers(register: Any) -> None:
    register(AnnealSolver)
