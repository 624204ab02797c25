"""XY-mixer QAOA simulated in the feasible subspace: dimension Π_g C(n_g, M_g) · 2^free instead of 2^n.

The constraint-preserving circuit of :mod:`lmshrink.solvers.qaoa` (Hadfield et al., arXiv:1709.03489) never
leaves the span of the feasible basis states, so its state is a vector over them:

- start: the uniform superposition over the feasible states, i.e. a Dicke state |D^{n_g}_{M_g}⟩ per group and
  |+⟩ per free variable;
- cost layer ``e^{−iγ h(x)}``: a phase per basis state, ``h = (E − E_ref)/scale`` (a constant only changes the
  global phase);
- mixer layer: the same product of two-level rotations as the circuit, in the circuit's order. An XY hop
  ``e^{−iβ(X_aX_b + Y_aY_b)/2}`` (qiskit's ``XXPlusYYGate(2β)``) acts on the pair of basis states that differ by
  swapping bits a ≠ b as ``[[cos β, −i sin β], [−i sin β, cos β]]`` and leaves the rest alone; ``RX(2β)`` on a free
  variable does the same to the pair that differs in that bit. With ``trotter=False`` the mixer is instead the
  exact ``e^{−iβ H_M}``, ``H_M`` the sum of those hops as a sparse Hermitian matrix (scipy's ``expm_multiply``).

Parameters follow qiskit's ``QAOAAnsatz`` order ``[β_1..β_p, γ_1..γ_p]``. :func:`optimize` starts from a linear
ramp (the discretized adiabatic path of TQA, Sack & Serbyn, Quantum 5, 491 (2021): γ_k = (k − ½)/p · Δ,
β_k = −(1 − (k − ½)/p) · Δ, Δ from a coarse scan) at p = 1 and grows p by INTERP (Zhou et al., PRX 10, 021067
(2020)), each depth refined by COBYLA on the expected energy.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import numpy as np

from ...core import BinaryQuadraticProblem, LmshrinkError
from ...core.errors import ProblemTooLargeError, require
from .layout import Layout, check_qubo, make_layout, problem_layout, qubo_energies

numba = require("numba", "fast", "The subspace QAOA simulator")

MAX_DIM = 20_000_000


@numba.njit(cache=True)
def _phase(psi, h, gamma):
    """ψ_x ← e^{−iγ h_x} ψ_x."""
    for t in range(len(psi)):
        psi[t] *= complex(math.cos(gamma * h[t]), -math.sin(gamma * h[t]))


@numba.njit(cache=True)
def _apply_hops(psi, lo, hi, bounds, c, s):
    """Apply each hop ``h`` (pairs lo[bounds[h]:bounds[h+1]], hi[...]) in order: ψ_lo, ψ_hi ← c ψ_lo − i s ψ_hi,
    c ψ_hi − i s ψ_lo. (Serial: a parallel launch per hop costs more than it saves on two loaded cores.)"""
    ms = -1j * s
    for h in range(len(bounds) - 1):
        for t in range(bounds[h], bounds[h + 1]):
            a, b = lo[t], hi[t]
            pa, pb = psi[a], psi[b]
            psi[a] = c * pa + ms * pb
            psi[b] = c * pb + ms * pa


def _combination_codes(members: np.ndarray, m: int) -> np.ndarray:
    """Bit codes (Σ 2^i over the ones) of every way to put m ones on ``members``."""
    weights = np.left_shift(np.int64(1), members.astype(np.int64))
    if m == 0:
        return np.zeros(1, dtype=np.int64)
    combos = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(len(members)), m)),
                         dtype=np.int64).reshape(-1, m)
    return weights[combos].sum(axis=1)


def feasible_codes(lay: Layout) -> np.ndarray:
    """Sorted bit codes of every feasible state (bit i of the code is x_i)."""
    if lay.n > 62:
        raise ProblemTooLargeError(f"The subspace simulator takes at most 62 variables, not {lay.n}.")
    dim = 2 ** len(lay.free)
    for g in range(lay.num_groups):
        dim *= math.comb(int(lay.size[g]), int(lay.equals[g]))
    if dim > MAX_DIM:
        raise ProblemTooLargeError(f"The feasible subspace has {dim:,} states (at most {MAX_DIM:,} are simulated).")
    codes = np.zeros(1, dtype=np.int64)
    for g in range(lay.num_groups):
        codes = (codes[:, None] + _combination_codes(lay.group(g), int(lay.equals[g]))[None, :]).ravel()
    for k in lay.free:
        codes = np.concatenate([codes, codes + (np.int64(1) << np.int64(k))])
    return np.sort(codes)


def mixer_pairs(lay: Layout, mixer: str) -> list[tuple[int, int]]:
    """The circuit's hops in order: (a, b) XY pairs of each group on a ``ring`` or the ``complete`` graph, then
    (k, −1) for each free variable's RX — the order of :func:`lmshrink.solvers.qaoa.xy_circuits`."""
    if mixer not in ("ring", "complete"):
        raise LmshrinkError(f"mixer must be 'ring' or 'complete', not {mixer!r}.")
    pairs: list[tuple[int, int]] = []
    for g in range(lay.num_groups):
        q = [int(v) for v in lay.group(g)]
        m = len(q)
        if m < 2:
            continue
        if mixer == "complete":
            pairs += [(q[a], q[b]) for a in range(m) for b in range(a + 1, m)]
        else:
            pairs += [(q[a], q[(a + 1) % m]) for a in range(m if m > 2 else 1)]
    pairs += [(int(k), -1) for k in lay.free]
    return pairs


class SubspaceQAOA:
    """The QAOA state of one problem over its feasible subspace (see the module docstring).

    Energies are ``offset + l·x + xᵀQx``. ``scale`` divides them in the cost layer (default: their standard
    deviation over the subspace, so one set of angles fits problems of any energy scale); ``reference`` is
    subtracted first (default: their mean).
    """

    def __init__(self, linear: np.ndarray, Q: np.ndarray, groups: list[np.ndarray] | tuple = (),
                 equals: list[int] | tuple = (), *, mixer: str = "ring", trotter: bool = True,
                 scale: float | None = None, reference: float | None = None, offset: float = 0.0) -> None:
        lin, Q = check_qubo(linear, Q)
        self.layout = make_layout(len(lin), groups, equals)
        self.codes = feasible_codes(self.layout)
        self.dim = len(self.codes)
        n = self.layout.n
        self.energies = np.empty(self.dim)
        for s in range(0, self.dim, 1 << 16):  # in chunks: (dim, n) float64 would be large
            X = self.states(slice(s, s + (1 << 16)))
            self.energies[s : s + len(X)] = offset + qubo_energies(X, lin, Q)
        self.scale = float(scale) if scale is not None else float(self.energies.std()) or 1.0
        self.reference = float(reference) if reference is not None else float(self.energies.mean())
        self.h = (self.energies - self.reference) / self.scale
        self.pairs = mixer_pairs(self.layout, mixer)
        lo, hi, bounds = [], [], [0]
        for a, b in self.pairs:
            flip = (np.int64(1) << np.int64(a)) | (np.int64(1) << np.int64(b) if b >= 0 else np.int64(0))
            if b >= 0:  # states with x_a = 1, x_b = 0 pair with the swapped state
                side = np.flatnonzero(((self.codes >> a) & 1 == 1) & ((self.codes >> b) & 1 == 0))
            else:  # free variable: states with x_a = 0 pair with x_a = 1
                side = np.flatnonzero((self.codes >> a) & 1 == 0)
            lo.append(side)
            hi.append(np.searchsorted(self.codes, self.codes[side] ^ flip))
            bounds.append(bounds[-1] + len(side))
        self.lo = np.concatenate(lo).astype(np.int64) if lo else np.zeros(0, dtype=np.int64)
        self.hi = np.concatenate(hi).astype(np.int64) if hi else np.zeros(0, dtype=np.int64)
        self.bounds = np.asarray(bounds, dtype=np.int64)
        self.trotter = bool(trotter)
        self._H = None
        if not self.trotter:
            sp = require("scipy.sparse", "qaoa", "The exact XY mixer")
            rows = np.concatenate([self.lo, self.hi])
            cols = np.concatenate([self.hi, self.lo])
            self._H = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(self.dim, self.dim))
        self.n = n
        self.optimum = float(self.energies.min())
        tol = 1e-9 * max(1.0, abs(self.optimum))
        self.optimal = self.energies <= self.optimum + tol

    def states(self, index: Any = slice(None)) -> np.ndarray:
        """Basis states as 0/1 rows (int8), for the codes at ``index``."""
        codes = np.atleast_1d(self.codes[index])
        return ((codes[:, None] >> np.arange(self.layout.n)) & 1).astype(np.int8)

    def statevector(self, params: np.ndarray) -> np.ndarray:
        """The amplitudes over the feasible basis at ``params = [β_1..β_p, γ_1..γ_p]``."""
        params = np.asarray(params, dtype=np.float64)
        if params.ndim != 1 or len(params) % 2:
            raise LmshrinkError(f"QAOA parameters must be [β_1..β_p, γ_1..γ_p], got shape {params.shape}.")
        p = len(params) // 2
        psi = np.full(self.dim, 1 / math.sqrt(self.dim), dtype=np.complex128)
        for k in range(p):
            _phase(psi, self.h, float(params[p + k]))
            if self.trotter:
                _apply_hops(psi, self.lo, self.hi, self.bounds, math.cos(params[k]), math.sin(params[k]))
            else:
                from scipy.sparse.linalg import expm_multiply

                psi = expm_multiply(-1j * params[k] * self._H, psi)
        return psi

    def probabilities(self, params: np.ndarray) -> np.ndarray:
        return np.abs(self.statevector(params)) ** 2

    def expectation(self, params: np.ndarray) -> float:
        """⟨E⟩ (in the problem's energy units) at ``params``."""
        return float(self.probabilities(params) @ self.energies)


def interp(params: np.ndarray) -> np.ndarray:
    """INTERP: angles for depth p + 1 from optimal ones at depth p,
    θ'_i = (i − 1)/p · θ_{i−1} + (p − i + 1)/p · θ_i (i = 1..p+1, θ_0 = θ_{p+1} = 0), for β and γ apart."""
    params = np.asarray(params, dtype=np.float64)
    p = len(params) // 2
    out = []
    for theta in (params[:p], params[p:]):
        padded = np.concatenate([[0.0], theta, [0.0]])
        i = np.arange(1, p + 2)
        out.append((i - 1) / p * padded[i - 1] + (p - i + 1) / p * padded[i])
    return np.concatenate(out)


def ramp(p: int, delta: float) -> np.ndarray:
    """Linear-ramp angles [β..., γ...]: γ_k = (k − ½)/p · Δ, β_k = −(1 − (k − ½)/p) · Δ."""
    t = (np.arange(1, p + 1) - 0.5) / p
    return np.concatenate([-(1 - t) * delta, t * delta])


def objective(sim: SubspaceQAOA, cvar_alpha: float | None = None, gibbs_eta: float | None = None):
    """The function of the angles that :func:`optimize` minimises, on the scaled energies h:

    - default: the expectation ⟨h⟩;
    - ``cvar_alpha``: CVaR_α, the mean of the lowest α of the probability mass (Barkoutsos et al., Quantum 4, 256
      (2020)), which rewards mass on the best states rather than a lower average;
    - ``gibbs_eta``: −log⟨e^{−η(h − h_min)}⟩ (Li et al., PRR 2, 023074 (2020)), the same idea, smooth.
    """
    if cvar_alpha is not None and gibbs_eta is not None:
        raise LmshrinkError("Give cvar_alpha or gibbs_eta, not both.")
    if cvar_alpha is not None and not 0 < cvar_alpha <= 1:
        raise LmshrinkError(f"cvar_alpha must be in (0, 1], not {cvar_alpha}.")
    if gibbs_eta is not None and not gibbs_eta > 0:
        raise LmshrinkError(f"gibbs_eta must be positive, not {gibbs_eta}.")
    order = np.argsort(sim.h, kind="stable")
    h_sorted = sim.h[order]
    weight = np.exp(-(gibbs_eta or 0.0) * (sim.h - sim.h.min()))

    def cost(x: np.ndarray) -> float:
        probs = sim.probabilities(x)
        if cvar_alpha is not None:
            mass = np.minimum(np.cumsum(probs[order]), cvar_alpha)
            return float(np.diff(mass, prepend=0.0) @ h_sorted / cvar_alpha)
        if gibbs_eta is not None:
            return float(-np.log(max(probs @ weight, 1e-300)))
        return float(probs @ sim.h)

    return cost


def optimize(sim: SubspaceQAOA, *, p_max: int = 3, maxiter: int = 100, shots: int = 1024, seed: int | None = 0,
             deltas: tuple[float, ...] = tuple(np.geomspace(0.25, 64, 9)), cvar_alpha: float | None = None,
             gibbs_eta: float | None = None) -> dict[str, Any]:
    """Ramp at p = 1 (best Δ of ``deltas``), COBYLA, then INTERP to p + 1 and COBYLA again, up to ``p_max``,
    each minimising :func:`objective` (the expectation unless ``cvar_alpha`` or ``gibbs_eta`` is given).

    Returns per depth the angles, ⟨E⟩, the optimum's probability and the uniform baseline 1/dim, the number of
    circuit evaluations and the time, plus ``shots`` samples at the deepest angles: the best sampled state, its
    energy and probability, and whether it is optimal.
    """
    minimize = require("scipy.optimize", "qaoa", "QAOA angle optimization").minimize
    if p_max < 1 or maxiter < 1 or shots < 1:
        raise LmshrinkError("p_max, maxiter and shots must be at least 1.")
    start = time.perf_counter()
    evals = 0

    f = objective(sim, cvar_alpha, gibbs_eta)

    def cost(x: np.ndarray) -> float:
        nonlocal evals
        evals += 1
        return f(x)

    scan = {d: cost(ramp(1, d)) for d in deltas}
    params = ramp(1, min(scan, key=scan.get))
    depths = []
    for p in range(1, p_max + 1):
        if p > 1:
            params = interp(params)
        t0, e0 = time.perf_counter(), evals
        # first steps of 10% of the largest angle: γ may be tens when the low states lie close together
        rhobeg = max(0.1, 0.1 * float(np.abs(params).max()))
        res = minimize(cost, params, method="COBYLA", options={"maxiter": int(maxiter), "rhobeg": rhobeg})
        params = np.asarray(res.x)
        probs = sim.probabilities(params)
        depths.append({
            "p": p,
            "params": params.tolist(),
            "expectation": float(probs @ sim.energies),
            "p_optimal": float(probs[sim.optimal].sum()),
            "evaluations": evals - e0,
            "time_s": time.perf_counter() - t0,
        })
    rng = np.random.default_rng(seed)
    probs = sim.probabilities(params)
    draws = rng.choice(sim.dim, size=int(shots), p=probs / probs.sum())
    best = int(draws[np.argmin(sim.energies[draws])])
    uniform = 1.0 / sim.dim
    return {
        "dim": sim.dim,
        "uniform": uniform,
        "optimum": sim.optimum,
        "depths": depths,
        "p_optimal": depths[-1]["p_optimal"],
        "p_optimal_over_uniform": depths[-1]["p_optimal"] / uniform,
        "best_sampled": {"state": sim.states(best)[0].tolist(), "energy": float(sim.energies[best]),
                         "probability": float(probs[best]), "over_uniform": float(probs[best]) / uniform,
                         "optimal": bool(sim.optimal[best])},
        "evaluations": evals,
        "time_s": time.perf_counter() - start,
    }


def subspace_problem(problem: BinaryQuadraticProblem, **options: Any) -> SubspaceQAOA:
    """A :class:`SubspaceQAOA` of a problem (energies include its offset)."""
    lay = problem_layout(problem)
    return SubspaceQAOA(problem.linear, problem.quadratic, [lay.group(g) for g in range(lay.num_groups)],
                        lay.equals.tolist(), offset=problem.offset, **options)
