"""``surrogate``: removal by surrogate search over measured losses, with any binary solver as the proposal step.

Each round (i) fits the Bayesian pairwise surrogate (:mod:`.surrogate`) to every loss measured so far, (ii) asks a
binary solver for the lowest unmeasured states of the posterior-mean QUBO and of Thompson draws of it, under the
removal constraints, (iii) predicts those states before measuring them (the round's out-of-sample R² and Spearman
ρ go into the trace), and (iv) measures them. The search starts from the lowest states of a prior QUBO (the
``fisher`` objective's first-order expansion by default) and the picks of cheap baselines, and stops at a budget of
loss evaluations (by default what SLEB spends on the same removal). It returns the measured sets, best first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..baselines.base import greedy_order
from ..core import BinaryQuadraticProblem, Constraint, option
from ..core.errors import LmshrinkError
from ..core.method import RemovalMethod, Selection
from ..plugins import get_objective, get_solver
from ..report import log
from ..solvers.exact import count_feasible
from .surrogate import PairwiseSurrogate, fit_quality, qubo_weights, weights_to_qubo

#: above this many feasible states the ``auto`` proposer anneals instead of enumerating
EXACT_PROPOSER_LIMIT = 200_000


def sleb_budget(constraints: Sequence[Constraint]) -> int:
    """Loss evaluations SLEB spends on these constraints: every step measures each block still allowed."""
    left = [c.equals for c in constraints]
    size = [len(c.indices) for c in constraints]
    total = 0
    for _ in range(sum(left)):
        total += sum(s for s, m in zip(size, left) if m > 0)
        k = max(range(len(left)), key=lambda g: (left[g] > 0, size[g]))  # the largest group still open
        left[k] -= 1
        size[k] -= 1
    return total


def layers_of(blocks: Sequence[Any]) -> dict[int, list[int]]:
    """The unit indices of each decoder layer, in block order."""
    layers: dict[int, list[int]] = {}
    for b in blocks:
        layers.setdefault(int(b.layer), []).append(int(b.index))
    return layers


def layer_costs(problem: BinaryQuadraticProblem, groups: dict[int, list[int]]) -> dict[int, float]:
    """Each layer's cost E(x_L) − E(0): the energy of removing its variables ``groups[L]`` alone (for a first-order
    objective the sum of its units' scores, the score of the layer's own gate)."""
    zero = problem.energy(np.zeros(problem.num_variables))
    return {L: problem.energy(_state(units, problem.num_variables)) - zero for L, units in groups.items()}


def layer_aligned(costs: dict[int, float], blocks: Sequence[Any],
                  constraints: Sequence[Constraint]) -> tuple[int, ...] | None:
    """A start in whole layers for a search in units finer than layers (sub-layers); ``None`` in layer units.

    Layers are ranked by ``costs`` (:func:`layer_costs`, of a sub-layer objective or of a layer objective such as
    block influence) and units are added layer by layer in that order while ``constraints`` leave room
    (:func:`~lmshrink.baselines.base.greedy_order`): whole layers first, then the units of the next layers that
    still fit the budget. A search whose proposals come from a sub-layer objective alone tends to drop many small
    units (attention sub-layers) whose sum costs more than a few whole layers; this start gives it the whole-layer
    choice to improve on."""
    layers = layers_of(blocks)
    if len(layers) == len(blocks) or not constraints:
        return None
    rank = {L: r for r, L in enumerate(sorted(layers, key=lambda L: (costs.get(L, np.inf), L)))}
    order = {i: rank[L] + k / (len(units) + 1) for L, units in layers.items() for k, i in enumerate(units)}
    removed, _ = greedy_order(constraints, lambda done, allowed: {i: order[i] for i in allowed})
    return tuple(sorted(removed))


def _state(indices: Sequence[int], n: int) -> np.ndarray:
    x = np.zeros(n, dtype=np.int8)
    x[list(indices)] = 1
    return x


@dataclass(frozen=True)
class SurrogateSearchOptions:
    budget: int | None = option(None, "loss evaluations (default: what SLEB spends on the same removal)")
    batch: int = option(4, "states proposed and measured per round")
    samples: int = option(16, "calibration windows per loss measurement (the first ones)")
    prior: str = option("fisher", "prior QUBO: fisher (first-order expansion of the gate gradients), pairs, none",
                                  choices=("fisher", "pairs", "none"))
    proposer: str = option("auto", "binary solver minimising the sampled surrogate (auto: exact when small, else "
                                   "anneal)")
    seeds: str = option("block-influence,norm-ratio", "objectives whose lowest state is measured first")
    batch_size: int = option(8, "windows per forward pass")
    seed: int = option(0, "random seed of the Thompson draws and the proposer")


class SurrogateSearch(RemovalMethod):
    """Search removal sets by a Bayesian pairwise surrogate of the measured loss (BOCS-style)."""

    name = "surrogate"
    description = ("Surrogate search: a Bayesian pairwise QUBO of the measured loss, refitted each round; a binary "
                   "solver proposes its lowest unmeasured states (Thompson sampling) within a budget of evaluations.")
    options = SurrogateSearchOptions

    def __init__(self, loss: Callable[[Sequence[int]], Any] | None = None) -> None:
        #: optional shared oracle returning a LossEstimate (e.g. a RemovalLoss a caller also uses elsewhere)
        self.loss = loss

    def run(self, model, adapter, calibration, blocks, constraints, *, granularity, progress, budget, batch,
            samples, prior, proposer, seeds, batch_size, seed):
        from ..evaluate.measured import RemovalLoss

        if batch < 1 or samples is not None and samples < 2:
            raise LmshrinkError("surrogate: batch must be ≥ 1 and samples ≥ 2 (standard errors need 2 windows).")
        n = len(blocks)
        budget = sleb_budget(constraints) if budget is None else int(budget)
        if budget < 1:
            raise LmshrinkError(f"surrogate: the budget must be at least 1 loss evaluation, not {budget}.")
        oracle = self.loss or RemovalLoss(model, adapter, calibration.input_ids[:samples], granularity=granularity,
                                          batch_size=batch_size, progress=False)
        base = oracle([])
        rng = np.random.default_rng(seed)
        prior_w, prior_info = self._prior(prior, model, adapter, calibration, granularity, progress)
        surrogate = PairwiseSurrogate(n, prior_w)
        measured: dict[tuple[int, ...], tuple[float, float]] = {}  # insertion order = measurement order
        history: list[dict[str, Any]] = []
        trace: list[dict[str, Any]] = []

        def measure(states: list[tuple[int, ...]]) -> list[tuple[float, float]]:
            out = []
            for s in states:
                est = oracle(s)
                d, se = est.minus(base)
                measured[s] = (est.mean, est.se)
                surrogate.observe(_state(s, n), d, max(se, 1e-6))
                best = min(measured.items(), key=lambda kv: kv[1][0])
                history.append({"evaluation": len(measured), "best_loss": best[1][0], "best": list(best[0])})
                out.append((d, se))
            return out

        first = self._initial(prior_w, seeds, model, adapter, calibration, blocks, constraints, granularity,
                              proposer, batch, seed)
        while len(first) < min(batch, budget):  # no prior and no seeds: random feasible states to fit on
            state = tuple(sorted(int(i) for c in constraints for i in rng.choice(c.indices, c.equals, replace=False)))
            if state not in first:
                first.append(state)
        first = first[:budget]
        log(progress, f"surrogate: {len(first)} initial states, budget {budget} evaluations")
        measure(first)
        trace.append({"round": 0, "proposed": [list(s) for s in first], "fit": None})
        rounds = 0
        while len(measured) < budget:
            rounds += 1
            surrogate.fit()
            want = min(batch, budget - len(measured))
            proposals = self._propose(surrogate, constraints, n, want, measured, proposer, rng)
            if not proposals:
                break
            predicted, _ = surrogate.predict(np.array([_state(s, n) for s in proposals]))
            got = measure(proposals)
            quality = fit_quality(predicted, [g[0] for g in got])
            trace.append({"round": rounds, "proposed": [list(s) for s in proposals],
                          "predicted": predicted.tolist(), "measured": [g[0] for g in got], "fit": quality,
                          "alpha": surrogate.alpha, "tau": list(surrogate.tau), "best_loss": history[-1]["best_loss"]})
            if progress and rounds % 5 == 0:
                log(True, f"surrogate: {len(measured)}/{budget} evaluations, best loss {history[-1]['best_loss']:.5f}")
        ranked = sorted(measured, key=lambda s: measured[s][0])
        half = next((h for h in history if h["evaluation"] >= max(budget // 2, 1)), history[-1])
        info = {"evaluations": len(measured), "budget": budget, "rounds": rounds, "samples": oracle.base.windows,
                "base_loss": base.mean, "prior": prior_info, "proposer": proposer, "history": history,
                "best_at_half_budget": {"indices": half["best"], "loss": half["best_loss"],
                                        "evaluations": half["evaluation"]},
                "standard_errors": [measured[s][1] for s in ranked[:10]],
                "measured": [{"state": list(s), "loss": v[0], "se": v[1]} for s, v in measured.items()]}
        return Selection([list(s) for s in ranked[:10]], [measured[s][0] for s in ranked[:10]], None, trace, info)

    # --- pieces -------------------------------------------------------------------------------------------------
    def _prior(self, prior: str, model, adapter, calibration, granularity, progress) -> tuple[Any, dict[str, Any]]:
        if prior == "none":
            return None, {"name": "none"}

        options = {"granularity": granularity, "progress": progress}
        if prior == "fisher":
            options["first_order"] = True
        problem = get_objective(prior).build(model, adapter, calibration, **options)
        return qubo_weights(problem.linear, problem.quadratic, problem.offset), {"name": prior, **(
            {"first_order": True} if prior == "fisher" else {})}

    def _initial(self, prior_w, seeds, model, adapter, calibration, blocks, constraints, granularity, proposer,
                 batch, seed) -> list[tuple[int, ...]]:
        """The prior's lowest states and the seed objectives' lowest states, each followed (in units finer than
        layers) by its :func:`layer_aligned` start, distinct, in that order. A seed objective that works in whole
        layers only (block influence, norm ratio) gives its layer-aligned start alone."""
        n = len(blocks)
        layers = layers_of(blocks)
        finer = len(layers) < n
        states: list[tuple[int, ...]] = []

        def aligned(problem: BinaryQuadraticProblem, groups: dict[int, list[int]]) -> list[tuple[int, ...]]:
            start = layer_aligned(layer_costs(problem, groups), blocks, constraints) if finer else None
            return [start] if start is not None else []

        if prior_w is not None:
            lin, Q, c = weights_to_qubo(prior_w, n)
            problem = BinaryQuadraticProblem([b.name for b in blocks], lin, Q, c, list(constraints))
            states += self._lowest(problem, batch, proposer, seed, set()) + aligned(problem, layers)
        for name in [s.strip() for s in str(seeds or "").split(",") if s.strip()]:
            objective = get_objective(name)
            try:
                problem = objective.build(model, adapter, calibration, **self._build_options(objective, granularity))
            except LmshrinkError:
                if not finer:
                    continue  # a baseline that does not apply here
                try:  # an objective of whole layers: its layers ranked, filled in the search's units
                    problem = objective.build(model, adapter, calibration, **self._build_options(objective, "layer"))
                except LmshrinkError:
                    continue
                if problem.num_variables == len(layers):  # variable k is the k-th layer
                    states += aligned(problem, {L: [k] for k, L in enumerate(sorted(layers))})
                continue
            problem = BinaryQuadraticProblem(problem.variables, problem.linear, problem.quadratic, problem.offset,
                                             list(constraints))
            states += self._lowest(problem, 1, proposer, seed, set(states)) + aligned(problem, layers)
        return list(dict.fromkeys(states))

    @staticmethod
    def _build_options(objective: Any, granularity: str) -> dict[str, Any]:
        """The build options an objective takes, of granularity and progress."""
        return {k: v for k, v in (("granularity", granularity), ("progress", False)) if k in objective.options}

    def _lowest(self, problem: BinaryQuadraticProblem, k: int, proposer: str, seed: int,
                skip: set[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """Up to ``k`` lowest states of ``problem`` not in ``skip``, from the proposer."""
        name, opts = proposer, {}
        if proposer == "auto":
            if count_feasible(problem) <= EXACT_PROPOSER_LIMIT:
                name = "exact"
            else:
                name, opts = "anneal", {"num_reads": 16, "num_sweeps": 200}
        solutions = get_solver(name, problem).solve(problem, num_solutions=k + len(skip) + 4, seed=seed, **opts)
        out = [s.indices for s in solutions if s.indices not in skip]
        return out[:k]

    def _propose(self, surrogate: PairwiseSurrogate, constraints, n: int, want: int,
                 measured: dict, proposer: str, rng: np.random.Generator) -> list[tuple[int, ...]]:
        """The posterior mean's lowest unmeasured state, then one per Thompson draw."""
        names = [f"x{i}" for i in range(n)]
        out: list[tuple[int, ...]] = []
        for j in range(want):
            w = surrogate.mean_weights if j == 0 else surrogate.sample_weights(rng)
            lin, Q, c = weights_to_qubo(w, n)
            problem = BinaryQuadraticProblem(names, lin, Q, c, list(constraints))
            skip = set(measured) | set(out)
            found = self._lowest(problem, 1, proposer, int(rng.integers(2**31)), skip)
            if found:
                out.append(found[0])
        if not out:  # the solver kept returning measured states: explore one random swap of the best ones
            out = self._random_neighbours(measured, constraints, want, rng)
        return out

    @staticmethod
    def _random_neighbours(measured: dict, constraints, want: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
        ranked = sorted(measured, key=lambda s: measured[s][0])
        out: list[tuple[int, ...]] = []
        for s in ranked[: max(want, 1) * 4]:
            for c in constraints:
                on = [i for i in c.indices if i in s]
                off = [i for i in c.indices if i not in s]
                if on and off:
                    a, b = int(rng.choice(on)), int(rng.choice(off))
                    t = tuple(sorted((set(s) - {a}) | {b}))
                    if t not in measured and t not in out:
                        out.append(t)
                        break
            if len(out) >= want:
                break
        return out


__all__ = ["SurrogateSearch", "sleb_budget"]
