"""``anneal``: annealing at fixed magnetization (Kawasaki swap moves), many reads in parallel.

Every read starts from a random feasible state. A move in a constrained group swaps a 1 and a 0 of that group, so
Σx stays equal to M at every step: the constraint is kept exactly instead of being added as a penalty. Variables
in no constraint move by single flips. Moves are accepted with the Metropolis rule at inverse temperature β.

With numba installed (``pip install 'lmshrink[fast]'``) the reads run in the compiled kernel
:func:`lmshrink.solvers.kernels.anneal_swap.anneal_swap`: by default each read is a parallel-tempering chain of
``replicas`` = 8 replicas on a fixed geometric β ladder (``replicas=1``: one read anneals geometrically from β_hot to
β_cold); β_cold accepts the smallest uphill move out of a local minimum with probability 1e-3, so the schedule ends
cold, and a greedy descent to a 1-swap local minimum finishes every read. Without numba a vectorized numpy
annealer does the same with ``replicas`` ignored (slower: about 80× fewer sweeps per second at N = 128), and says
so in ``info["note"]``.

A problem with a weighted band ``L ≤ Σ w·x ≤ U`` (a parameter budget) runs the numpy band annealer
(:mod:`lmshrink.solvers.band_anneal`): flips and swaps proposed only when the weighted sum stays in the band,
from starts repaired into it; ``info["engine"]`` is then ``"numpy-bands"``.

The raw samples (:attr:`lmshrink.core.SolutionSet.raw`) are the reads' final states; ``info["final_hit_rate"]``
is the fraction of reads whose final state reached the lowest energy the run found, ``info["best_seen_hit_rate"]``
the same for the lowest state each read visited.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import BinaryQuadraticProblem, RawSummary, Samples, Solver, SolverCapabilities, option
from ..core.errors import MissingDependencyError
from .band_anneal import anneal_bands, keep_best
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


def lowest_with_neighbours(problem: BinaryQuadraticProblem, states: np.ndarray, count: int,
                           deadline: float | None = None, rounds: int = 4) -> tuple[np.ndarray, int]:
    """``states`` with the swap neighbours of the ``count`` lowest added, repeated (neighbours of neighbours)
    until those ``count`` lowest stop changing, at most ``rounds`` times: when every read ends in the optimum, the
    second to k-th lowest states can lie two or more swaps away. Returns the states and how many were added."""
    added = 0
    for _ in range(rounds):
        neighbours = swap_neighbours(problem, states, count, deadline)
        if len(neighbours) == 0:
            break
        before = _lowest_keys(problem, states, count)
        states = np.concatenate([states, neighbours])
        added += len(neighbours)
        if _lowest_keys(problem, states, count) == before or (deadline is not None and time.perf_counter() > deadline):
            break
    return states, added


def _lowest_keys(problem: BinaryQuadraticProblem, states: np.ndarray, count: int) -> set[bytes]:
    distinct = np.unique(np.asarray(states, dtype=np.int8), axis=0)
    feasible = distinct[[problem.is_feasible(s) for s in distinct]]
    if len(feasible) == 0:
        return set()
    order = np.argsort(problem.energies(feasible), kind="stable")[:count]
    return {feasible[i].tobytes() for i in order}


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
            if not c.is_cardinality:  # a band: only swaps that keep the weighted sum inside it
                wmap = dict(zip(c.indices, c.weight_array()))
                won = np.array([wmap[int(v)] for v in on])
                woff = np.array([wmap[int(v)] for v in off])
                total = won.sum() - won[:, None] + woff[None, :]
                lo = -np.inf if c.lower is None else c.lower - c.tolerance()
                hi = np.inf if c.upper is None else c.upper + c.tolerance()
                d = np.where((total >= lo) & (total <= hi), d, np.inf)
            d = d.ravel()
            pick = np.argpartition(d, per_seed - 1)[:per_seed] if per_seed < d.size else np.arange(d.size)
            pick = pick[np.isfinite(d[pick])]
            deltas.append(d[pick])
            moves_i.append(on[pick // len(off)])
            moves_j.append(off[pick % len(off)])
        for c in problem.constraints:  # single flips that keep a band's weighted sum inside it
            if c.is_cardinality:
                continue
            idx = np.array(c.indices, dtype=np.int64)
            xb = s[idx].astype(np.float64)
            total = xb @ c.weight_array() + (1 - 2 * xb) * c.weight_array()
            lo = -np.inf if c.lower is None else c.lower - c.tolerance()
            hi = np.inf if c.upper is None else c.upper + c.tolerance()
            inside = (total >= lo) & (total <= hi)
            d = (1 - 2 * xb) * (lin[idx] + qd[idx] + F[idx] - 2 * qd[idx] * xb)
            deltas.append(d[inside])
            moves_i.append(idx[inside])
            moves_j.append(np.full(int(inside.sum()), -1))
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
    num_reads: int = option(32, "independent reads, run in parallel", minimum=1)
    num_sweeps: int = option(1000, "sweeps per read (per replica with tempering); one sweep is N proposed moves",
                             minimum=1)
    replicas: int = option(8, "parallel-tempering replicas per read on a fixed β ladder; 1: simulated annealing "
                              "from β_hot to β_cold (needs numba, else ignored)", minimum=1)
    beta_range: tuple[float, float] | None = option(None, "(β_hot, β_cold); default from the problem's energy scale")


def compiled_kernel() -> Any:
    """The compiled annealing module (:mod:`lmshrink.solvers.kernels.anneal_swap`), or None without numba."""
    try:
        from .kernels import anneal_swap
    except MissingDependencyError:
        return None
    return anneal_swap


def at_best(energies: np.ndarray, best: float) -> float:
    """Fraction of ``energies`` within 1e-9 (relative, absolute near 0) of ``best``."""
    return float(np.mean(np.asarray(energies) <= best + 1e-9 * max(1.0, abs(best))))


class AnnealSolver(Solver):
    """Annealing that keeps every cardinality constraint exactly by swap moves (parallel tempering by default)."""

    name = "anneal"
    description = "Parallel tempering / simulated annealing with swap moves at fixed magnetization (numba)."
    options = AnnealOptions
    capabilities = SolverCapabilities(budget_options={"reads": "num_reads", "effort": "num_sweeps"},
                                      quick_options={"num_sweeps": 300},
                                      constraint_kinds=("cardinality", "weighted"))

    def sample(self, problem: BinaryQuadraticProblem, *, num_solutions: int, seed: int | None,
               time_limit: float | None, options: AnnealOptions) -> Samples:
        start = time.perf_counter()
        kernel = None if problem.has_weighted_constraints else compiled_kernel()
        if problem.has_weighted_constraints:
            final, final_e, best, best_e, info = anneal_bands(
                problem, num_reads=options.num_reads, num_sweeps=options.num_sweeps, seed=seed,
                time_limit=time_limit, beta_range=options.beta_range)
            info["engine"] = "numpy-bands"
        elif kernel is None:
            final, final_e, best, best_e, info = self._numpy(problem, options, seed, time_limit)
            info["engine"] = "numpy"
            info["note"] = ("numba is not installed: simulated annealing in numpy, replicas ignored "
                            "(pip install 'lmshrink[fast]' for the compiled kernel)")
        else:
            hot, cold = options.beta_range if options.beta_range is not None else (None, None)
            final, final_e, best, best_e, info = kernel.anneal_problem(
                problem, num_reads=options.num_reads, num_sweeps=options.num_sweeps, replicas=options.replicas,
                beta_hot=hot, beta_cold=cold, seed=seed, time_limit=time_limit)
            info["engine"] = "numba"
        lowest = float(min(best_e.min(), final_e.min()))
        info["final_hit_rate"] = at_best(final_e, lowest)
        info["best_seen_hit_rate"] = at_best(best_e, lowest)
        states = np.concatenate([best, final])
        raw = RawSummary.of(problem, final)
        if num_solutions > 1 and kernel is not None and options.replicas > 1:
            # tempering sends every read to the ground state; many short plain-annealing reads end in diverse low
            # minima, which a ranked candidate list needs (the k lowest can lie many swaps apart)
            _, _, spread, _, _ = kernel.anneal_problem(
                problem, num_reads=max(options.num_reads, 25 * num_solutions),
                num_sweeps=max(options.num_sweeps // 5, 50), replicas=1, beta_hot=hot,
                beta_cold=cold, seed=None if seed is None else seed + 1, time_limit=time_limit)
            states = np.concatenate([states, spread])
        if num_solutions > 1:
            deadline = None if time_limit is None else start + float(time_limit)
            states, info["num_neighbours"] = lowest_with_neighbours(problem, states, num_solutions, deadline)
        return Samples(states, info, raw=raw, stopped_early=bool(info.get("stopped_early")))

    def _numpy(self, problem: BinaryQuadraticProblem, options: AnnealOptions, seed: int | None,
               time_limit: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """The numpy annealer: (final states, their energies, best states, their energies, info).

        β rises geometrically over the proposed moves from β_hot (a typical uphill move accepted half the time) to
        β_cold (the smallest uphill move sampled accepted 1% of the time); every read then descends to a 1-swap
        local minimum (:func:`~lmshrink.solvers.repair.swap_descent`).
        """
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
        info: dict[str, Any] = {"num_reads": R, "num_sweeps": int(num_sweeps)}

        # where moves happen: each constrained group with probability ∝ its size, free variables likewise
        movers = [("swap", k, len(g)) for k, g in enumerate(groups)] + ([("flip", -1, len(free))] if len(free) else [])
        if not movers:
            info["note"] = "every variable is fixed by the constraints"
            return x, energy, best_x, best_e, info
        weights = np.array([w for _, _, w in movers], dtype=float)
        weights /= weights.sum()

        hot, cold = beta_range if beta_range is not None else self._beta_range(problem, x, F, ones, zeros, free, rng)
        steps = max(int(num_sweeps) * n, 1)
        ratio = (cold / hot) ** (1.0 / max(steps - 1, 1))  # geometric schedule β_t = β_hot · ratio^t
        rows = np.arange(R)
        chunk = 1024
        done = steps
        for t in range(steps):
            if t % chunk == 0:  # random numbers in chunks: memory stays flat however long the schedule
                if deadline is not None and time.perf_counter() > deadline:
                    info["stopped_early"], done = True, t  # out of time: the quench below still runs
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
            keep_best(x, energy, best_x, best_e)
        info.update(beta_range=[float(hot), float(cold)], sweeps_done=done // n)
        quenched = swap_descent(problem, x)
        quenched_e = problem.energies(quenched)
        info["quench_improved"] = int((quenched_e < problem.energies(x) - 1e-12 * (1 + np.abs(quenched_e))).sum())
        better = quenched_e < best_e
        best_x[better], best_e[better] = quenched[better], quenched_e[better]
        return quenched, quenched_e, best_x, best_e, info

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
