"""``fermigrad`` for rank allocation: learn one soft truncation point per matrix by gradient descent.

Each matrix l keeps its singular values through a Fermi function of their index,

    f_{l,i} = 1 / (1 + exp((i − μ_l) / T))                i = 0 … k_l − 1                            (1)

with one learnable "Fermi level" μ_l per matrix and a global temperature T. At T → 0 the mask keeps exactly the
first ⌈μ_l⌉ values, i.e. rank r_l = #{i : f_{l,i} > ½}. The soft parameter count is

    C(μ) = Σ_l Σ_i f_{l,i} Δc_{l,i},      Δc_{l,i} = cost_l(i + 1) − cost_l(i)                          (2)

(Δc = m + n for a plain factorization, m + n − 2i − 1 for PivGa, 0 past the break-even rank where the matrix is
kept dense), which equals the exact cost at any hard mask. The solver minimises a loss L(f) subject to C(μ) = B:

- with a loss oracle (the option ``loss``, a :class:`~lmshrink.core.rank.LossOracle`; ``lmshrink svd`` passes the
  ``fermi-rank`` objective's: the model's calibration loss with soft-truncated weights, KL to the uncompressed
  model or cross-entropy), L is that loss, one minibatch per step;
- without one (e.g. a problem read from a file), L is the proxy Σ_l w_l Σ_i (1 − f_{l,i}) σ_{l,i}², the soft version
  of the summed whitened truncation error (its stationary points are the equal-marginal-value allocations that
  the greedy repair also approaches; ``init="greedy"`` starts there).

Each step takes the gradient g = ∂L/∂θ (θ_l = μ_l / k_l) and h = ∂C/∂θ, removes the component of g along h with
the Lagrange multiplier λ = max(0, −⟨g, h⟩/⟨h, h⟩) — the global "chemical potential" that prices one stored
number in loss units — and feeds g + λh to Adam (second-moment decay 0.9, so the step size follows gradients
that shrink by orders of magnitude as μ_l moves into the tail). Then all θ_l are shifted by one common amount,
found by safeguarded Newton iteration, so that C = B holds exactly again (like fixing a Fermi gas's particle number with its chemical
potential). A fixed point has g_l = −λ h_l for every l: equal marginal loss per stored number (KKT). T is
annealed geometrically from ``t_start`` to ``t_end`` and the learning rate decays ×0.1 over the run.

Only the μ_l train; the factors and the model stay frozen. At the end the hard ranks are read off (1), snapped to
allowed ranks and repaired to the exact budget (:func:`lmshrink.core.rank.repair_ranks`): steps down, fewest
lost value per saved number first, while over budget; then steps up, most value per added number first, while
one fits, so no further rank step fits. The value of singular value i of matrix l is −∂L/∂f_{l,i} averaged over
the last ``value_window`` of the steps (with the oracle), or w_l σ_{l,i}² (proxy).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ..core import LmshrinkError, Samples, Solver, SolverCapabilities, option
from ..core.rank import LossOracle, RankAllocationProblem, check_covers, marginal_values, repair_ranks, uniform_ranks

#: Adam's second-moment decay: short, so steps follow gradients that shrink as μ_l moves into the tail
BETA2 = 0.9


def _soft_cost(theta: np.ndarray, ks: np.ndarray, idx: np.ndarray, dc: np.ndarray, T: float) -> tuple[float, float]:
    """(C, dC/ds) of (2) at θ + s for a common shift s (evaluated at s = 0), on padded (L, k_max) tables."""
    z = np.clip((theta[:, None] * ks[:, None] - idx[None, :]) / T, -60, 60)
    f = 1.0 / (1.0 + np.exp(-z))
    return float((f * dc).sum()), float((f * (1 - f) * dc * (ks[:, None] / T)).sum())


def _shift_to_budget(theta: np.ndarray, ks: np.ndarray, idx: np.ndarray, dc: np.ndarray, T: float, budget: float,
                     lo_clip: np.ndarray, hi_clip: np.ndarray) -> np.ndarray:
    """clip(θ + s) with soft cost (2) equal to ``budget``: safeguarded Newton on the common shift s (C grows with s)."""

    def cost(s: float) -> tuple[float, float]:
        return _soft_cost(np.clip(theta + s, lo_clip, hi_clip), ks, idx, dc, T)

    lo, hi = -1.5, 1.5
    if cost(hi)[0] <= budget:
        return np.clip(theta + hi, lo_clip, hi_clip)
    if cost(lo)[0] >= budget:
        return np.clip(theta + lo, lo_clip, hi_clip)
    s = 0.0
    for _ in range(100):
        c, d = cost(s)
        if abs(c - budget) <= 1e-9 * budget:
            break
        if c > budget:
            hi = s
        else:
            lo = s
        step = s - (c - budget) / d if d > 0 else None
        s = step if step is not None and lo < step < hi else (lo + hi) / 2
        if hi - lo < 1e-13:
            break
    return np.clip(theta + s, lo_clip, hi_clip)


@dataclass(frozen=True)
class RankFermiGradOptions:
    steps: int = option(0, "gradient steps (0: 60 with a loss oracle, 500 on the proxy)")
    lr: float = option(0.02, "Adam learning rate of θ_l = μ_l/k_l (fraction of the full rank per step)")
    t_start: float = option(0.0, "initial temperature, in ranks (0: 3% of the largest full rank)")
    t_end: float = option(0.25, "final temperature, in ranks")
    init: str = option("auto", "start from the uniform ratio or the greedy proxy optimum (auto: uniform with a loss "
                               "oracle, greedy on the proxy)", choices=("auto", "uniform", "greedy"))
    loss: LossOracle | None = option(None, "loss oracle: differentiable calibration loss of the soft keep-masks (a "
                                           "LossOracle, given from Python; `lmshrink svd` passes the objective's); "
                                           "none: the proxy")
    use_loss: bool = option(True, "use the loss oracle when one is given (false: the proxy)")
    value_window: float = option(0.3, "fraction of the last steps whose mask gradients value the repair steps")
    progress: bool = option(True, "show a progress bar")


class RankFermiGradSolver(Solver):
    """Fermi-function soft truncation trained by gradient descent (loss oracle or proxy), then budget repair."""

    name = "rank-fermigrad"
    description = ("Rank allocation: Fermi-function truncation levels trained on the model loss (or the whitened "
                   "error) at fixed budget, T → 0, exact repair.")
    options = RankFermiGradOptions
    capabilities = SolverCapabilities(problem_types=(RankAllocationProblem,))

    def sample(self, problem: RankAllocationProblem, *, num_solutions: int, seed: int | None,
               time_limit: float | None, options: RankFermiGradOptions) -> Samples:
        import torch

        o = options
        steps, lr, t_start, t_end, init, loss = o.steps, o.lr, o.t_start, o.t_end, o.init, o.loss
        use_loss, value_window, progress = o.use_loss, o.value_window, o.progress
        start = time.perf_counter()
        L = problem.num_matrices
        oracle = loss if use_loss else None
        if oracle is not None:
            check_covers(oracle, problem, "loss oracle", "one mask per matrix")
        steps = steps or (60 if oracle is not None else 500)
        if problem.min_cost() > problem.budget + 1e-9:
            raise LmshrinkError("The budget is below the cost of the smallest allowed ranks.")
        ks = np.array([problem.max_rank(l) for l in range(L)], dtype=np.float64)
        kmax = int(ks.max())
        t0 = t_start if t_start > 0 else max(0.03 * kmax, 2 * t_end)
        t_end = min(t_end, t0)
        budget = float(problem.budget)
        # padded (L, k_max) tables: marginal cost Δc_{l,i} of (2) and proxy values w_l σ²_{l,i}; 0 past k_l
        idx = np.arange(kmax, dtype=np.float64)
        dc = np.zeros((L, kmax))
        s2 = np.zeros((L, kmax))
        values_proxy = marginal_values(problem)
        for l in range(L):
            k = int(ks[l])
            dc[l, :k] = np.diff(problem.cost_table(l))
            s2[l, :k] = values_proxy[l]
        s2 /= max(float(s2.sum()), 1e-300)
        valid = idx[None, :] < ks[:, None]

        # start: uniform ratio, or the greedy optimum of the proxy energy
        if init == "auto":
            init = "uniform" if oracle is not None else "greedy"
        if init == "greedy":
            x0 = repair_ranks(problem, [problem.allowed_ranks(l)[0] for l in range(L)], values_proxy)
        else:
            x0 = uniform_ranks(problem)
        lo_clip = np.zeros(L)
        hi_clip = 1.0 + 4.0 * t0 / ks  # a little past k: every value kept
        theta = _shift_to_budget(np.clip(x0 / ks, lo_clip, hi_clip), ks, idx, dc, t0, budget, lo_clip, hi_clip)
        adam_m, adam_v = np.zeros(L), np.zeros(L)
        beta1, beta2 = 0.9, BETA2
        window_start = int(math.floor(steps * (1 - value_window)))
        value_sum = np.zeros((L, kmax))
        value_count = 0
        history: list[dict[str, float]] = []
        lam = 0.0
        done = 0
        T = t0
        bar = tqdm(range(steps), desc="fermigrad", disable=not progress, leave=False)
        for step in bar:
            if time_limit is not None and time.perf_counter() - start > time_limit:
                break
            frac = step / max(steps - 1, 1)
            T = t0 * (t_end / t0) ** frac
            step_lr = lr * 0.1**frac
            # (1): f_{l,i} = 1 / (1 + exp((i − μ_l)/T)), μ_l = θ_l k_l
            z = np.clip((theta[:, None] * ks[:, None] - idx[None, :]) / T, -60, 60)
            f = 1.0 / (1.0 + np.exp(-z))
            if oracle is not None:
                leaf = torch.from_numpy(f).requires_grad_(True)
                loss_t = oracle([leaf[l, : int(ks[l])] for l in range(L)])
                (grad_f_t,) = torch.autograd.grad(loss_t, leaf)
                grad_f = np.where(valid, grad_f_t.detach().to(torch.float64).numpy(), 0.0)
                loss = float(loss_t.detach())
            else:
                grad_f = -s2  # ∂/∂f of the proxy Σ (1 − f) σ²
                loss = float(((1 - f) * s2).sum())
            # chain rule to θ_l: ∂f_{l,i}/∂θ_l = f(1 − f) k_l / T;  g = ∂L/∂θ,  h = ∂(C/B)/∂θ
            df = f * (1 - f) * (ks[:, None] / T)
            g = (grad_f * df).sum(axis=1)
            h = (dc * df).sum(axis=1) / budget
            hh = float(h @ h)
            lam = max(0.0, -float(g @ h) / hh) if hh > 0 else 0.0  # multiplier making g + λh tangent to C = B
            grad = g + lam * h
            adam_m = beta1 * adam_m + (1 - beta1) * grad
            adam_v = beta2 * adam_v + (1 - beta2) * grad**2
            mhat, vhat = adam_m / (1 - beta1 ** (step + 1)), adam_v / (1 - beta2 ** (step + 1))
            root = np.sqrt(vhat)
            theta = theta - step_lr * mhat / (root + 1e-8 * root.max() + 1e-300)  # Adam, scale-free epsilon
            theta = _shift_to_budget(theta, ks, idx, dc, T, budget, lo_clip, hi_clip)
            if step >= window_start:
                value_sum -= grad_f
                value_count += 1
            if step % max(steps // 50, 1) == 0 or step == steps - 1:
                history.append({"step": step, "T": T, "loss": loss, "lambda": lam})
            bar.set_postfix(loss=f"{loss:.4g}", T=f"{T:.3g}")
            done = step + 1
        bar.close()

        mu = theta * ks
        hard = np.clip(np.ceil(mu - 1e-9), 0, ks).astype(np.int64)  # #{i : i < μ} = #{i : f_i > ½}
        if oracle is not None and value_count:
            values = [np.maximum(value_sum[l, : int(ks[l])] / value_count, 0.0) for l in range(L)]
            # ties (zero gradients) broken by the proxy
            values = [v + 1e-12 * p / max(float(p.sum()), 1e-300) for v, p in zip(values, values_proxy)]
        else:
            values = values_proxy
        x = repair_ranks(problem, hard, values, fill=True)
        info = {
            "objective": "loss oracle" if oracle is not None else "proxy (summed whitened truncation error)",
            "loss_oracle": None if oracle is None else repr(oracle),
            "steps": done,
            "t_start": t0,
            "t_end": t_end,
            "lambda": lam,
            "init": init,
            "soft_cost_ratio": _soft_cost(theta, ks, idx, dc, T)[0] / budget,
            "rounded_cost_ratio": sum(int(problem.cost_table(l)[hard[l]]) for l in range(L)) / budget,
            "repaired_matrices": int((x != hard).sum()),
            "loss_first": history[0]["loss"] if history else None,
            "loss_last": history[-1]["loss"] if history else None,
            "history": history,
            "time_per_step_s": (time.perf_counter() - start) / max(done, 1),
            "oracle_calls": done if oracle is not None else 0,
        }
        return Samples(x[None, :], info, per_state={"mu": [mu.round(3).tolist()]})
