"""``anneal``: simulated annealing at fixed magnetization (Kawasaki swap dynamics), vectorized over reads.

Every read starts from a random feasible state. A move in a constrained group swaps a 1 and a 0 of that group, so
Σx stays equal to M at every step: the constraint is kept exactly instead of being added as a penalty. Variables
in no constraint move by single flips. Moves are accepted with the Metropolis rule at inverse temperature β,
raised geometrically from β_hot (a typical uphill move accepted half the time) to β_cold (the smallest uphill move
accepted 1% of the time).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..core import BinaryQuadraticProblem, Option, Samples, Solver
from ..plugins import hookimpl


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


def swap_neighbours(problem: BinaryQuadraticProblem, states: np.ndarray, count: int) -> np.ndarray:
    """Every feasible one-swap (or, for free variables, one-flip) neighbour of the ``count`` lowest distinct states.

    Annealing reads tend to meet in a few states; their neighbours are the low-lying excitations a ranked
    candidate list needs.
    """
    distinct = np.unique(states, axis=0)
    feasible = distinct[[problem.is_feasible(s) for s in distinct]]
    if len(feasible) == 0:
        return np.zeros((0, problem.num_variables), dtype=states.dtype)
    seeds = feasible[np.argsort(problem.energies(feasible))[:count]]
    out = []
    for s in seeds:
        for c in problem.constraints:
            idx = np.array(c.indices)
            on, off = idx[s[idx] == 1], idx[s[idx] == 0]
            if len(on) == 0 or len(off) == 0:
                continue
            block = np.repeat(s[None], len(on) * len(off), axis=0)
            ii, jj = np.repeat(on, len(off)), np.tile(off, len(on))
            rows = np.arange(len(block))
            block[rows, ii] = 0
            block[rows, jj] = 1
            out.append(block)
        for k in problem.free_indices:
            t = s.copy()
            t[k] ^= 1
            out.append(t[None])
    return np.concatenate(out) if out else np.zeros((0, problem.num_variables), dtype=states.dtype)


class AnnealSolver(Solver):
    """Simulated annealing that keeps every cardinality constraint exactly by swap moves."""

    name = "anneal"
    description = "Simulated annealing with swap moves at fixed magnetization (Kawasaki dynamics)."
    options = {
        "num_reads": Option(32, "independent annealing runs (vectorized)", int),
        "num_sweeps": Option(1000, "sweeps per read; one sweep is N proposed moves", int),
        "beta_range": Option(None, "(β_hot, β_cold); default from the problem's energy scale", None),
    }

    def sample(self, problem, *, num_solutions, seed, time_limit, num_reads, num_sweeps, beta_range) -> Samples:
        rng = np.random.default_rng(seed)
        n = problem.num_variables
        lin, Q = problem.linear, problem.quadratic
        R = max(int(num_reads), 1)
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
        deadline = None if time_limit is None else time.perf_counter() + float(time_limit)
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
        states = np.concatenate([best_x, x])
        if num_solutions > 1:
            states = np.concatenate([states, swap_neighbours(problem, states, num_solutions)])
        info = {"num_reads": R, "num_sweeps": int(num_sweeps), "beta_range": [float(hot), float(cold)]}
        if stopped_at is not None:
            info["stopped_early_at_sweep"] = stopped_at // n
        return Samples(states, info)

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
