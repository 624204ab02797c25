"""``fermigrad`` for binary problems: a Fermi–Dirac mean-field relaxation at fixed particle number.

Each constrained group c is a system of M_c fermions on the levels ε_i, i ∈ c. At temperature T the mean-field
occupations are Fermi–Dirac,

    n_i = 1 / (1 + exp((ε_i − μ_c) / T)),      with μ_c set by bisection so that Σ_{i∈c} n_i = M_c,

so every relaxed state satisfies each cardinality exactly. Variables in no constraint have no particle number to
keep and use plain sigmoid occupations n_i = 1 / (1 + exp(ε_i / T)). The energy of the occupations is the
mean-field (independent-Bernoulli) expectation of the objective, i.e. its multilinear extension

    E(n) = offset + Σ_i (l_i + Q_ii) n_i + Σ_{i≠j} Q_ij n_i n_j          (x_i² = x_i keeps the diagonal linear),

which equals the true energy at every 0/1 point. E is minimised over the levels ε by Adam while T is lowered
geometrically from ``t_start`` to ``t_end`` (annealing to the T → 0 limit, where n becomes the 0/1 indicator of
the M_c lowest levels).

The gradient goes through μ_c(ε) by the implicit function theorem. With w_i = n_i (1 − n_i), differentiating
Σ n_i = M gives ∂μ/∂ε_i = w_i / Σ_j w_j. The code gets exactly this from one differentiable Newton step on top
of the (non-differentiable) bisection: μ = μ* + T (M − Σ_i n_i(μ*, ε)) / Σ_j w_j, with μ* and Σ w detached.

``num_restarts`` independent level sets are optimised as one batch. Every ``record_every`` steps of the second
half of the schedule, and at the end, each restart is read off (the M_c most occupied variables of each group,
free variables with n > 1/2), which gives several candidates per restart. Read-offs are feasible by
construction (they are the ``raw`` samples); the solver is ``RepairComposite(FermiGradRelaxation())``, so with
``polish`` (default) each then descends by constraint-preserving swaps (:func:`lmshrink.solvers.repair.swap_descent`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import BinaryQuadraticProblem, Samples, Solver, SolverCapabilities, option
from ..core.errors import MissingDependencyError
from .composites import RepairedSolver


@dataclass(frozen=True)
class FermiGradOptions:
    num_restarts: int = option(16, "independent level sets optimised in one batch", minimum=1)
    steps: int = option(300, "gradient steps", minimum=1)
    lr: float = option(0.05, "Adam learning rate on the levels ε", minimum=0.0)
    t_start: float = option(1.0, "initial temperature (levels start with unit spread)", minimum=0.0)
    t_end: float = option(1e-3, "final temperature", minimum=0.0)
    bisection_iters: int = option(30, "bisection steps for each chemical potential μ", minimum=1)
    record_every: int = option(25, "read off candidates every this many steps in the second half", minimum=1)


class FermiGradRelaxation(Solver):
    """Fermi–Dirac mean-field relaxation with μ by bisection, gradient descent (torch) and annealed T; raw
    read-offs only (see :class:`FermiGradSolver` for the polished solver)."""

    name = "fermigrad-relaxation"
    description = "Fermi-Dirac mean-field relaxation at fixed particle number (torch); raw read-offs."
    options = FermiGradOptions
    capabilities = SolverCapabilities(requires=("torch",), quick_options={"steps": 150})

    def sample(self, problem: BinaryQuadraticProblem, *, num_solutions: int, seed: int | None,
               time_limit: float | None, options: FermiGradOptions) -> Samples:
        o = options
        try:
            import torch
        except ImportError as exc:  # torch is a core dependency, so no extra to name
            raise MissingDependencyError("The 'fermigrad' solver needs PyTorch: pip install torch") from exc
        # the tensors are tiny: one thread avoids the OpenMP spin-waits that collide with other runtimes' pools
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._run(torch, problem, seed, time_limit, o.num_restarts, o.steps, o.lr, o.t_start, o.t_end,
                             o.bisection_iters, o.record_every)
        finally:
            torch.set_num_threads(threads)

    def _run(self, torch: Any, problem: BinaryQuadraticProblem, seed: int | None, time_limit: float | None,
             num_restarts: int, steps: int, lr: float, t_start: float, t_end: float, bisection_iters: int,
             record_every: int) -> Samples:
        start = time.perf_counter()
        n = problem.num_variables
        R = max(int(num_restarts), 1)
        gen = torch.Generator().manual_seed(int(seed or 0))
        dt = torch.float64
        Q = torch.as_tensor(problem.quadratic, dtype=dt)
        diag = torch.diagonal(Q).clone()
        Q0 = Q - torch.diag(diag)
        a = torch.as_tensor(problem.linear, dtype=dt) + diag
        groups = [
            (torch.as_tensor(c.indices, dtype=torch.long), int(c.equals)) for c in problem.constraints
        ]
        free = torch.as_tensor(problem.free_indices, dtype=torch.long)

        eps = torch.randn(R, n, generator=gen, dtype=dt).requires_grad_(True)
        opt = torch.optim.Adam([eps], lr=float(lr))
        temps = np.geomspace(float(t_start), float(t_end), max(int(steps), 1))
        record = max(int(record_every), 1)
        candidates: list[np.ndarray] = []
        last_energy = float("nan")
        done = 0
        for t, T in enumerate(temps):
            occ = self._occupations(torch, eps, float(T), groups, free, n, int(bisection_iters))
            energy = problem.offset + occ @ a + torch.einsum("ri,ij,rj->r", occ, Q0, occ)
            opt.zero_grad()
            energy.sum().backward()
            opt.step()
            last_energy = float(energy.detach().min())
            done = t + 1
            if t >= len(temps) // 2 and (t - len(temps) // 2) % record == 0:
                candidates.append(self._read_off(eps.detach().numpy(), problem))
            if time_limit is not None and time.perf_counter() - start > time_limit:
                break
        candidates.append(self._read_off(eps.detach().numpy(), problem))
        states = np.concatenate(candidates)
        info = {
            "num_restarts": R,
            "steps_done": done,
            "final_temperature": float(temps[done - 1]),
            "relaxed_energy": last_energy,
        }
        return Samples(states, info, stopped_early=done < len(temps))

    @staticmethod
    def _occupations(torch: Any, eps: Any, T: float, groups: list, free: Any, n: int, iters: int) -> Any:
        """n(ε, T): Fermi–Dirac per group with μ from bisection plus one implicit-gradient Newton step."""
        cols = []
        index = []
        for idx, m in groups:
            e = eps[:, idx]
            if m == 0 or m == len(idx):  # the constraint fixes the group
                cols.append(torch.full_like(e, float(m > 0)))
                index.append(idx)
                continue
            with torch.no_grad():
                lo = e.min(dim=1, keepdim=True).values - 40 * T
                hi = e.max(dim=1, keepdim=True).values + 40 * T
                for _ in range(iters):  # Σ σ((μ − ε)/T) increases with μ
                    mid = (lo + hi) / 2
                    over = torch.sigmoid((mid - e) / T).sum(dim=1, keepdim=True) > m
                    hi = torch.where(over, mid, hi)
                    lo = torch.where(over, lo, mid)
                mu_star = (lo + hi) / 2
                n_star = torch.sigmoid((mu_star - e) / T)
                w_sum = (n_star * (1 - n_star)).sum(dim=1, keepdim=True).clamp_min(1e-300)
            # Newton correction: value ≈ μ*, gradient ∂μ/∂ε_i = w_i / Σ w (implicit function theorem)
            mu = mu_star + T * (m - torch.sigmoid((mu_star - e) / T).sum(dim=1, keepdim=True)) / w_sum
            cols.append(torch.sigmoid((mu - e) / T))
            index.append(idx)
        if len(free):
            cols.append(torch.sigmoid(-eps[:, free] / T))
            index.append(free)
        order = torch.cat(index)
        stacked = torch.cat(cols, dim=1)
        occ = torch.empty_like(eps)
        occ[:, order] = stacked
        return occ

    @staticmethod
    def _read_off(eps: np.ndarray, problem: BinaryQuadraticProblem) -> np.ndarray:
        """The T → 0 states: ones at the M_c lowest levels of each group, free variables where ε < 0."""
        X = np.zeros(eps.shape, dtype=np.int8)
        rows = np.arange(len(eps))[:, None]
        for c in problem.constraints:
            idx = np.array(c.indices, dtype=np.int64)
            if c.equals:
                pick = np.argsort(eps[:, idx], axis=1, kind="stable")[:, : c.equals]
                X[rows, idx[pick]] = 1
        free = np.array(problem.free_indices, dtype=np.int64)
        if len(free):
            X[:, free] = (eps[:, free] < 0).astype(np.int8)
        return X


class FermiGradSolver(RepairedSolver):
    """The Fermi–Dirac relaxation's read-offs, polished by constraint-preserving swap descent."""

    name = "fermigrad"
    description = "Fermi-Dirac mean-field relaxation at fixed particle number, annealed by gradient descent (torch)."
    sampler = FermiGradRelaxation

