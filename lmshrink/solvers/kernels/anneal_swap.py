"""Annealing at fixed magnetization, compiled with numba: Kawasaki swap moves, many reads in parallel.

Energy ``E(x) = l·x + xᵀQx`` (Q symmetric) over 0/1 vectors in which each group ``g`` holds exactly ``M_g`` ones.
Every read keeps the local field ``F = 2Qx`` (``F_k = 2 Σ_j Q_kj x_j``), from which one move's energy change is
O(1) (the ``anneal`` solver's formulas):

- swap in a group, ``x_i: 1 → 0`` and ``x_j: 0 → 1``:  ``Δ = (l_j + Q_jj + F_j − 2Q_ij) − (l_i − Q_ii + F_i)``;
- flip of a free variable ``k``:                       ``Δ = (1 − 2x_k)(l_k + Q_kk + F_k − 2Q_kk x_k)``;

and an accepted move updates ``F += 2(Q_j· − Q_i·)`` (or ``± 2Q_k·``) in O(N). A sweep is N proposals; the
mover is a group with probability ∝ its size (free variables together count as one mover of their number).
Moves are accepted with the Metropolis rule ``min(1, e^{−βΔ})``. Two schedules between β_hot and β_cold:

- ``replicas=1``, simulated annealing: β raised geometrically per sweep from β_hot to β_cold;
- ``replicas=L > 1`` (default 8), parallel tempering: each read is L replicas on a fixed geometric ladder of
  β from β_hot to β_cold, neighbouring replicas exchanging states after every sweep; the read's final state is
  its coldest replica's. On real layer problems low states several swaps apart lie within 0.2% of each other
  (SmolLM2, M = 12); annealed reads freeze into either, the exchanges keep carrying the lower one to the cold end.

Either way every read ends with a greedy descent (best improvement) to a 1-swap local minimum. Defaults: β_hot
accepts the median uphill move of a random state with probability 1/2; β_cold accepts the smallest uphill move
out of a 1-swap local minimum (the smallest over greedy descents from 16 random starts) with probability 1e-3,
so the run ends cold and the quench only finishes the job.

Reads run in parallel (``numba.prange``); each has its own splitmix64 stream (Steele, Lea & Flood, OOPSLA 2014)
seeded from ``numpy.random.SeedSequence(seed)``, so the output depends on the seed only, not on the threads.
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import numpy as np

from ...core import BinaryQuadraticProblem, LmshrinkError
from ...core.errors import require
from .notice import announce_compile
from .layout import Layout, check_qubo, energy_scale, make_layout, problem_layout, qubo_energies

numba = require("numba", "fast", "The compiled annealing kernel")
njit, prange = numba.njit, numba.prange

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TWO_M53 = 1.0 / 9007199254740992.0  # 2^-53: the top 53 bits of a draw make a double in [0, 1)
#: random starts that set the default β range (moves sampled at them, greedy descents from them)
PROBES = 16


# --- random numbers --------------------------------------------------------------------------------------------------
@njit(cache=True)
def _uniform(state: np.ndarray, r: int) -> float:
    """One splitmix64 step of stream ``r``, as a double in [0, 1)."""
    z = state[r] + _GOLDEN
    state[r] = z
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    z = z ^ (z >> _S31)
    return (z >> _S11) * _TWO_M53


@njit(cache=True)
def _below(state: np.ndarray, r: int, n: int) -> int:
    """A uniform integer in [0, n)."""
    return min(int(_uniform(state, r) * n), n - 1)


# --- moves -----------------------------------------------------------------------------------------------------------
@njit(cache=True)
def _propose(r, lin, Q, qd, equals, size, ones, ones_start, zeros, zeros_start, free, mover_group, mover_cum, x, F,
             rng):
    """Draw one move for read ``r``: returns (Δ, a, b, i, j); a swap has a ≥ 0 (slots in ones/zeros), a flip a = −1."""
    u = _uniform(rng, r)
    m = 0
    while m < len(mover_cum) - 1 and u >= mover_cum[m]:
        m += 1
    g = mover_group[m]
    if g >= 0:
        mg = equals[g]
        a = ones_start[g] + _below(rng, r, mg)
        b = zeros_start[g] + _below(rng, r, size[g] - mg)
        i = ones[r, a]
        j = zeros[r, b]
        d = (lin[j] + qd[j] + F[r, j] - 2.0 * Q[i, j]) - (lin[i] - qd[i] + F[r, i])
        return d, a, b, i, j
    k = free[_below(rng, r, len(free))]
    xk = x[r, k]
    d = (1.0 - 2.0 * xk) * (lin[k] + qd[k] + F[r, k] - 2.0 * qd[k] * xk)
    return d, -1, -1, k, -1


@njit(cache=True)
def _apply(r, a, b, i, j, Q, ones, zeros, x, F):
    """Apply a move drawn by :func:`_propose` and update the field F = 2Qx in O(N)."""
    n = x.shape[1]
    if a >= 0:
        x[r, i] = 0
        x[r, j] = 1
        ones[r, a] = j
        zeros[r, b] = i
        for k in range(n):
            F[r, k] += 2.0 * (Q[j, k] - Q[i, k])
    else:
        s = 1.0 - 2.0 * x[r, i]
        x[r, i] = 1 - x[r, i]
        for k in range(n):
            F[r, k] += 2.0 * s * Q[i, k]


@njit(cache=True)
def _metropolis_sweep(row, read, beta, lin, Q, qd, equals, size, ones, ones_start, zeros, zeros_start, free,
                      mover_group, mover_cum, x, F, E, best_x, best_E, rng):
    """N proposals on ``row`` at β, accepted with probability min(1, e^{−βΔ}); the lowest state seen is kept as
    ``best_x[read]``. Returns the number of accepted moves."""
    acc = 0
    for _ in range(x.shape[1]):
        d, a, b, i, j = _propose(row, lin, Q, qd, equals, size, ones, ones_start, zeros, zeros_start, free,
                                 mover_group, mover_cum, x, F, rng)
        if d <= 0.0 or _uniform(rng, row) < math.exp(-beta * d):
            _apply(row, a, b, i, j, Q, ones, zeros, x, F)
            E[row] += d
            acc += 1
            if E[row] < best_E[read]:
                best_E[read] = E[row]
                best_x[read, :] = x[row, :]
    return acc


@njit(parallel=True, cache=True)
def _sweeps(lin, Q, qd, equals, size, ones, ones_start, zeros, zeros_start, free, mover_group, mover_cum,
            x, F, E, best_x, best_E, rng, betas, s0, s1, accepted):
    """Sweeps s0..s1−1 of every read (N proposals each, Metropolis at β = betas[s])."""
    for r in prange(x.shape[0]):
        for s in range(s0, s1):
            accepted[r] += _metropolis_sweep(r, r, betas[s], lin, Q, qd, equals, size, ones, ones_start, zeros,
                                             zeros_start, free, mover_group, mover_cum, x, F, E, best_x, best_E, rng)


@njit(parallel=True, cache=True)
def _pt_sweeps(lin, Q, qd, equals, size, ones, ones_start, zeros, zeros_start, free, mover_group, mover_cum,
               x, F, E, best_x, best_E, rng, ladder, perm, s0, s1, accepted, exchanges):
    """Parallel tempering: read r owns rows perm[r, :], row perm[r, t] at β = ladder[t] (hot to cold). A sweep is
    N proposals per replica, then an exchange attempt between each neighbouring pair of temperatures, accepted
    with probability min(1, e^{(β_t − β_{t+1})(E_t − E_{t+1})}) (Swendsen & Wang 1986; Hukushima & Nemoto 1996)."""
    R, L = perm.shape
    for r in prange(R):
        for s in range(s0, s1):
            for t in range(L):
                accepted[r] += _metropolis_sweep(perm[r, t], r, ladder[t], lin, Q, qd, equals, size, ones,
                                                 ones_start, zeros, zeros_start, free, mover_group, mover_cum, x, F,
                                                 E, best_x, best_E, rng)
            for t in range(L - 1):
                lo, hi = perm[r, t], perm[r, t + 1]
                arg = (ladder[t] - ladder[t + 1]) * (E[lo] - E[hi])
                if arg >= 0.0 or _uniform(rng, perm[r, 0]) < math.exp(arg):
                    perm[r, t], perm[r, t + 1] = hi, lo
                    exchanges[r] += 1


@njit(parallel=True, cache=True)
def _sample_deltas(lin, Q, qd, equals, size, ones, ones_start, zeros, zeros_start, free, mover_group, mover_cum,
                   x, F, rng, count):
    """|Δ| of ``count`` random moves proposed (not applied) at each read's state."""
    R = x.shape[0]
    out = np.empty((R, count))
    for r in prange(R):
        for c in range(count):
            d, a, b, i, j = _propose(r, lin, Q, qd, equals, size, ones, ones_start, zeros, zeros_start, free,
                                     mover_group, mover_cum, x, F, rng)
            out[r, c] = abs(d)
    return out


@njit(parallel=True, cache=True)
def _quench(lin, Q, qd, equals, size, ones, ones_start, zeros, zeros_start, free, x, F, E, tol, min_uphill, done,
            max_moves):
    """Best-improvement descent of every read not yet ``done`` toward a 1-swap (and 1-flip) local minimum, at most
    ``max_moves`` moves per read in this call.

    A move counts as improving when Δ < −tol. A read that reaches the local minimum gets ``done[r] = True`` and
    ``min_uphill[r]``, the smallest Δ > tol among the moves out of it (∞ when there is none).
    """
    R, n = x.shape
    G = len(equals)
    for r in prange(R):
        moves = 0
        while not done[r] and moves < max_moves:
            best, up = -tol, np.inf
            ba, bb, bi, bj = -1, -1, -1, -1
            for g in range(G):
                mg, zg = equals[g], size[g] - equals[g]
                if mg == 0 or zg == 0:
                    continue
                for a in range(ones_start[g], ones_start[g] + mg):
                    i = ones[r, a]
                    off = -(lin[i] - qd[i] + F[r, i])
                    for b in range(zeros_start[g], zeros_start[g] + zg):
                        j = zeros[r, b]
                        d = off + lin[j] + qd[j] + F[r, j] - 2.0 * Q[i, j]
                        if d < best:
                            best, ba, bb, bi, bj = d, a, b, i, j
                        elif tol < d < up:
                            up = d
            for k in free:
                xk = x[r, k]
                d = (1.0 - 2.0 * xk) * (lin[k] + qd[k] + F[r, k] - 2.0 * qd[k] * xk)
                if d < best:
                    best, ba, bb, bi, bj = d, -1, -1, k, -1
                elif tol < d < up:
                    up = d
            if bi < 0:
                min_uphill[r] = up
                done[r] = True
                break
            _apply(r, ba, bb, bi, bj, Q, ones, zeros, x, F)
            E[r] += best
            moves += 1


def quench(lin: np.ndarray, Q: np.ndarray, lay: Layout, reads: _Reads, tol: float,
           deadline: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Descend every read of ``reads`` (in place) to a 1-swap local minimum, in rounds of a few moves, stopping
    between rounds once ``deadline`` (``time.perf_counter()``) has passed. Returns (done, smallest uphill move)
    per read (see :func:`_quench`)."""
    R = len(reads.E)
    done = np.zeros(R, dtype=np.bool_)
    up = np.full(R, np.inf)
    qd = np.diag(Q).copy()
    max_moves = np.iinfo(np.int64).max if deadline is None else 8  # without a deadline one call does it all
    while not done.all():
        _quench(lin, Q, qd, lay.equals, lay.size, reads.ones, reads.ones_start, reads.zeros, reads.zeros_start,
                lay.free, reads.x, reads.F, reads.E, tol, up, done, max_moves)
        if deadline is not None and time.perf_counter() > deadline:
            break
    return done, up


# --- the Python side --------------------------------------------------------------------------------------------------
class AnnealResult(NamedTuple):
    """What :func:`anneal_swap` returns (a tuple, so it unpacks as ``final, final_E, best, best_E, info``)."""

    final_states: np.ndarray  #: (R, N) int8, each read's state after the schedule and the quench
    final_energies: np.ndarray  #: (R,), tracked incrementally (ΔE of each accepted move)
    best_states: np.ndarray  #: (R, N) int8, the lowest state each read visited (the final one included)
    best_energies: np.ndarray  #: (R,)
    info: dict[str, Any]


class _Reads:
    """Per-read state: x, F = 2Qx, E, the ones and zeros of each group (slots), and the random streams."""

    def __init__(self, lin: np.ndarray, Q: np.ndarray, lay: Layout, reads: int, seed: int | None) -> None:
        seq = np.random.SeedSequence(seed)
        self.entropy = seq.entropy
        init, streams = seq.spawn(2)
        gen = np.random.default_rng(init)
        n = lay.n
        self.x = np.zeros((reads, n), dtype=np.int8)
        ones, zeros = [], []
        for g in range(lay.num_groups):
            idx, m = lay.group(g), int(lay.equals[g])
            perm = idx[np.argsort(gen.random((reads, len(idx))), axis=1)] if len(idx) else np.zeros((reads, 0), int)
            ones.append(perm[:, :m])
            zeros.append(perm[:, m:])
            np.put_along_axis(self.x, perm[:, :m], 1, axis=1)
        if len(lay.free):
            self.x[:, lay.free] = gen.integers(0, 2, size=(reads, len(lay.free)))
        self.ones = np.ascontiguousarray(np.concatenate(ones, axis=1) if ones else np.zeros((reads, 0)), dtype=np.int64)
        self.zeros = np.ascontiguousarray(np.concatenate(zeros, axis=1) if zeros else np.zeros((reads, 0)),
                                          dtype=np.int64)
        self.ones_start = np.concatenate([[0], np.cumsum(lay.equals)[:-1]]).astype(np.int64)
        self.zeros_start = np.concatenate([[0], np.cumsum(lay.size - lay.equals)[:-1]]).astype(np.int64)
        self.F = 2.0 * self.x.astype(np.float64) @ Q
        self.E = qubo_energies(self.x, lin, Q)
        self.rng = streams.generate_state(reads, np.uint64)

    def take(self, rows: np.ndarray | slice = slice(None)) -> _Reads:
        """A copy holding only ``rows`` (all by default)."""
        out = object.__new__(_Reads)
        per_row = ("x", "F", "E", "ones", "zeros", "rng")
        out.__dict__ = {k: (np.ascontiguousarray(v[rows]) if k in per_row else v.copy() if isinstance(v, np.ndarray)
                            else v) for k, v in self.__dict__.items()}
        return out


def _movers(lay: Layout) -> tuple[np.ndarray, np.ndarray]:
    """(group per mover, −1 for the free variables; cumulative probabilities ∝ the number of variables moved)."""
    groups = [g for g in range(lay.num_groups) if 0 < lay.equals[g] < lay.size[g]]
    weights = [float(lay.size[g]) for g in groups]
    if len(lay.free):
        groups.append(-1)
        weights.append(float(len(lay.free)))
    cum = np.cumsum(weights) / max(sum(weights), 1.0)
    return np.array(groups, dtype=np.int64), np.asarray(cum, dtype=np.float64)


def default_beta_range(lin: np.ndarray, Q: np.ndarray, lay: Layout, reads: _Reads,
                       deadline: float | None = None) -> tuple[float, float, float]:
    """(β_hot, β_cold, smallest uphill move): see the module docstring; the moves are sampled at, and the
    descents run from, the first :data:`PROBES` random starts. Descents still running at ``deadline`` are left
    out (with none finished, the smallest sampled move stands in). ``reads`` is left unchanged."""
    qd = np.diag(Q).copy()
    group, cum = _movers(lay)
    probe = reads.take(slice(0, PROBES))
    d = _sample_deltas(lin, Q, qd, lay.equals, lay.size, probe.ones, probe.ones_start, probe.zeros,
                       probe.zeros_start, lay.free, group, cum, probe.x, probe.F, probe.rng, 16).ravel()
    tol = 1e-12 * energy_scale(lin, Q)
    d = d[d > tol]
    done, up = quench(lin, Q, lay, probe, tol, deadline)
    up = up[done]
    if d.size == 0:  # every move is free of cost: any β does
        return 1.0, 10.0, 0.0
    hot = math.log(2.0) / float(np.median(d))
    smallest = float(up.min()) if np.isfinite(up).any() else float(d.min())
    cold = max(math.log(1000.0) / smallest, 10.0 * hot)
    return hot, cold, smallest


def anneal_swap(
    linear: np.ndarray,
    Q: np.ndarray,
    groups: list[np.ndarray] | tuple = (),
    equals: list[int] | tuple = (),
    *,
    num_reads: int = 32,
    num_sweeps: int = 1000,
    replicas: int = 8,
    beta_hot: float | None = None,
    beta_cold: float | None = None,
    seed: int | None = None,
    time_limit: float | None = None,
) -> AnnealResult:
    """Anneal ``num_reads`` reads of ``min l·x + xᵀQx`` s.t. exactly ``equals[g]`` ones in each of ``groups``.

    Variables in no group are free (single flips). ``beta_hot``/``beta_cold`` default as in the module docstring.
    With ``replicas = L > 1`` each read is instead a parallel-tempering chain of L replicas on the fixed geometric
    ladder β_hot … β_cold, ``num_sweeps`` sweeps per replica; its final state is the coldest replica's (quenched).
    ``time_limit`` (seconds) cuts the run short; the quench still runs and ``info["sweeps_done"]`` says where it
    stopped. The same ``seed`` gives the same output whatever the number of threads.
    """
    lin, Q = check_qubo(linear, Q)
    lay = make_layout(len(lin), groups, equals)
    R, S, L = int(num_reads), int(num_sweeps), int(replicas)
    announce_compile("annealing kernels", [_sweeps if L == 1 else _pt_sweeps, _quench, _sample_deltas])
    if R < 1 or S < 0 or L < 1:
        raise LmshrinkError(f"num_reads and replicas must be ≥ 1 and num_sweeps ≥ 0 (got {R}, {L} and {S}).")
    if time_limit is not None and not time_limit > 0:
        raise LmshrinkError(f"time_limit must be positive (got {time_limit}).")
    for name, b in (("beta_hot", beta_hot), ("beta_cold", beta_cold)):
        if b is not None and not (math.isfinite(b) and b > 0):
            raise LmshrinkError(f"{name} must be a positive number (got {b}).")
    start = time.perf_counter()
    reads = _Reads(lin, Q, lay, R * L, seed)  # read r owns rows r·L … r·L + L − 1
    group, cum = _movers(lay)
    qd = np.diag(Q).copy()
    tol = 1e-12 * energy_scale(lin, Q)
    info: dict[str, Any] = {"num_reads": R, "num_sweeps": S, "replicas": L, "seed_entropy": int(reads.entropy)}
    done = 0
    accepted = np.zeros(R, dtype=np.int64)
    first = reads.E.reshape(R, L).argmin(axis=1) + np.arange(R) * L
    best_x, best_E = reads.x[first].copy(), reads.E[first].copy()
    perm = np.arange(R * L, dtype=np.int64).reshape(R, L)
    if not len(group):
        info.update(note="every variable is fixed by the constraints", sweeps_done=0,
                    time_s=time.perf_counter() - start)
        return AnnealResult(reads.x[perm[:, -1]], reads.E[perm[:, -1]], best_x, best_E, info)
    deadline = None if time_limit is None else start + float(time_limit)
    hot, cold, smallest = default_beta_range(lin, Q, lay, reads, deadline)
    hot = hot if beta_hot is None else float(beta_hot)
    cold = cold if beta_cold is None else float(beta_cold)
    info.update(beta_range=[hot, cold], smallest_uphill=smallest)
    if L > 1:  # geometric ladder β_t = β_hot (β_cold/β_hot)^{t/(L−1)}
        ladder = hot * (cold / hot) ** (np.arange(L) / (L - 1))
        exchanges = np.zeros(R, dtype=np.int64)
    # without a deadline one call runs every sweep; with one, the deadline is checked between chunks of sweeps
    # sized to about 0.1 s each (a parallel launch costs milliseconds on a loaded machine), starting from one sweep
    # (however many sweeps were asked for, the first check comes after one)
    chunk = S if deadline is None else 1
    args = (lin, Q, qd, lay.equals, lay.size, reads.ones, reads.ones_start, reads.zeros, reads.zeros_start,
            lay.free, group, cum, reads.x, reads.F, reads.E, best_x, best_E, reads.rng)
    while done < S:
        now = time.perf_counter()
        if deadline is not None and now > deadline:
            info["stopped_early"] = True
            break
        s1 = min(S, done + chunk)
        if L == 1:  # geometric schedule β_s = β_hot (β_cold/β_hot)^{s/(S−1)}, this chunk's part of it
            betas = hot * (cold / hot) ** (np.arange(done, s1) / max(S - 1, 1))
            _sweeps(*args, betas, 0, s1 - done, accepted)
        else:
            _pt_sweeps(*args, ladder, perm, done, s1, accepted, exchanges)
        chunk = max(1, min(int(0.1 * (s1 - done) / max(time.perf_counter() - now, 1e-6)), 4 * (s1 - done)))
        done = s1
    info.update(anneal_time_s=time.perf_counter() - start, sweeps_done=done,
                acceptance=float(accepted.sum()) / max(R * L * done * lay.n, 1))
    if L > 1:
        info["exchange_rate"] = float(exchanges.sum()) / max(R * (L - 1) * done, 1)
    final = reads.take(perm[:, -1])  # each read's coldest replica
    before = final.E.copy()
    # after a time limit the quench gets a grace period of its own: a quarter of the limit, at least 0.5 s
    grace = None if deadline is None else max(deadline, time.perf_counter()) + max(0.5, 0.25 * float(time_limit))
    done_q, _ = quench(lin, Q, lay, final, tol, grace)
    info["quench_improved"] = int((final.E < before - tol).sum())  # reads the schedule left above a local minimum
    info["quench_complete"] = bool(done_q.all())
    improved = final.E < best_E
    best_x[improved], best_E[improved] = final.x[improved], final.E[improved]
    info["time_s"] = time.perf_counter() - start
    return AnnealResult(final.x, final.E, best_x, best_E, info)


def anneal_problem(problem: BinaryQuadraticProblem, **options: Any) -> AnnealResult:
    """:func:`anneal_swap` on a problem's arrays; energies include the problem's offset."""
    lay = problem_layout(problem)
    groups = [lay.group(g) for g in range(lay.num_groups)]
    res = anneal_swap(problem.linear, problem.quadratic, groups, lay.equals.tolist(), **options)
    return res._replace(final_energies=res.final_energies + problem.offset,
                        best_energies=res.best_energies + problem.offset)


def greedy_descent(linear: np.ndarray, Q: np.ndarray, groups: list[np.ndarray] | tuple = (),
                   equals: list[int] | tuple = ()) -> tuple[np.ndarray, float]:
    """The trivial baseline: in each group the ``M_g`` variables of smallest ``l_i + Q_ii``, free variables at 0
    (or 1 where ``l_i + Q_ii < 0``), then best-improvement swap descent to a 1-swap local minimum."""
    lin, Q = check_qubo(linear, Q)
    lay = make_layout(len(lin), groups, equals)
    diag = lin + np.diag(Q)
    x = np.zeros((1, lay.n), dtype=np.int8)
    ones, zeros = [], []
    for g in range(lay.num_groups):
        idx = lay.group(g)
        order = idx[np.argsort(diag[idx], kind="stable")]
        m = int(lay.equals[g])
        ones.append(order[:m])
        zeros.append(order[m:])
        x[0, order[:m]] = 1
    x[0, lay.free[diag[lay.free] < 0]] = 1
    cat = lambda parts: np.ascontiguousarray(np.concatenate(parts)[None] if parts else np.zeros((1, 0)),  # noqa: E731
                                             dtype=np.int64)
    ones_start = np.concatenate([[0], np.cumsum(lay.equals)[:-1]]).astype(np.int64)
    zeros_start = np.concatenate([[0], np.cumsum(lay.size - lay.equals)[:-1]]).astype(np.int64)
    F = 2.0 * x.astype(np.float64) @ Q
    E = qubo_energies(x, lin, Q)
    _quench(lin, Q, np.diag(Q).copy(), lay.equals, lay.size, cat(ones), ones_start, cat(zeros), zeros_start,
            lay.free, x, F, E, 1e-12 * energy_scale(lin, Q), np.zeros(1), np.zeros(1, dtype=np.bool_),
            np.iinfo(np.int64).max)
    return x[0], float(E[0])
