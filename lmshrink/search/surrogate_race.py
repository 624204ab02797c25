"""``surrogate-race``: removal by a surrogate QUBO that any solver minimises, with racing deciding which proposals get
more tokens, under any removal constraints (counts per kind, or a budget in parameters) and a budget in tokens.

The fitness of a removal set S is a per-window increase over the dense model on calibration windows w = 1..W:
the KL of the pruned model's next-token distributions from the dense model's (:mod:`lmshrink.evaluate.kl`, 0 for the
dense model), or the CE increase ℓ_w(S) − ℓ_w(∅); optionally after S's own linear-healing maps are fitted
(:mod:`lmshrink.heal.fitness`). Each round

1. fits the Bayesian pairwise surrogate (:mod:`.surrogate`) to every set measured so far, each set's value the mean
   of its per-window increases over the windows it has, its noise the standard error of that mean
   (sd_w / √n_S: sets measured on more windows weigh more);
2. asks a binary solver for the lowest unmeasured states of the posterior mean and of Thompson draws of it, under
   the removal constraints (exact enumeration when small, else annealing, or any solver named), and predicts them
   before they are measured (out of sample: the round's R² and Spearman ρ against their values once raced);
3. races the proposals against the ``keep`` best sets so far (:func:`lmshrink.evaluate.racing.race`): all on the
   first ``first`` windows, then the windows doubled for the ones whose paired difference to the ``keep``-th best is
   not significantly worse, until ``keep`` are left or all W windows are used. A window a set has already been
   measured on is never measured again.

The first round races the prior's lowest states (the ``fisher`` objective's first-order QUBO by default), the
``seeds`` objectives' lowest states and random feasible sets (filled greedily in a random order, so budgets in
parameters are met). The search stops before a round whose first stage would pass the token budget less what the
final confirmation needs: the ``keep`` best sets are measured on all W windows at the end and ranked by that mean.

Tokens are counted as windows × seq_len passed through the model (the first removed unit's pass starts mid-stack
from the dense model's kept layer inputs, so a window costs at most one full pass); a healed fitness adds the
fitting passes (fitting samples × seq_len per set fitted), and the prior's gradients and the seeds' hidden states
each add one pass over the calibration samples. The searches' budgets (``evopress``, ``sleb``,
``blockpruner``) are counted in the same tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..baselines.evopress import feasible, mutate, random_order
from ..core import BinaryQuadraticProblem, option
from ..core.errors import LmshrinkError
from ..core.method import Selection
from ..evaluate.racing import race
from ..report import log
from .surrogate import PairwiseSurrogate, fit_quality, weights_to_qubo
from .surrogate_search import SurrogateSearch, _state

#: ``evaluate(removed, a, b)``: the per-window increase over the dense model of windows [a, b)
WindowMeasure = Callable[[Sequence[int], int, int], np.ndarray]


@dataclass
class RaceSearchResult:
    """The search's outcome: sets best first with their mean over all windows (the confirmed ones) or over the
    windows they have, the cost, one trace row per round."""

    ranked: list[tuple[int, ...]]
    means: list[float]
    windows: list[int]
    tokens: int
    evaluations: int
    seconds: float
    rounds: list[dict[str, Any]] = field(default_factory=list)


class _Measured:
    """Per-window values of every set measured, measuring only windows not measured before, with a token count."""

    def __init__(self, evaluate: WindowMeasure, num_windows: int, tokens_per_window: int) -> None:
        self.evaluate, self.num_windows, self.tokens_per_window = evaluate, num_windows, tokens_per_window
        self.values: dict[tuple[int, ...], np.ndarray] = {}
        self.tokens = 0
        self._estimates: dict[tuple[int, ...], tuple[float, float]] | None = None  # until a window is added

    def __call__(self, s: tuple[int, ...], a: int, b: int) -> np.ndarray:
        have = self.values.get(s, np.empty(0))
        if b > have.size:
            got = np.asarray(self.evaluate(list(s), have.size, b), dtype=np.float64).reshape(-1)
            if got.size != b - have.size:
                raise ValueError(f"the fitness returned {got.size} values for windows [{have.size}, {b})")
            self.tokens += got.size * self.tokens_per_window
            have = self.values[s] = np.concatenate([have, got])
            self._estimates = None
        return have[a:b]

    def estimates(self) -> dict[tuple[int, ...], tuple[float, float]]:
        """Each set's value v_S and its standard error, with the windows' own difficulty taken out.

        Sets have different numbers of windows (always the first n_S), and some windows are harder than others for
        every set, so plain means over different windows do not compare. The additive model ℓ_w(S) = v_S + d_w + ε
        (two-way, with the missing windows left out) is fitted by alternating least squares, with the d_w of the
        windows measured averaging 0: a set measured on every window then has v_S = its plain mean. se_S is the
        residual spread over √n_S (one window: the median spread of the others). Kept until a window is added."""
        if self._estimates is None:
            self._estimates = self._fit_estimates()
        return self._estimates

    def _fit_estimates(self, sweeps: int = 50) -> dict[tuple[int, ...], tuple[float, float]]:
        sets = list(self.values)
        width = max(v.size for v in self.values.values())
        table = np.full((len(sets), width), np.nan)
        for k, s in enumerate(sets):
            table[k, : self.values[s].size] = self.values[s]
        have = ~np.isnan(table)
        d = np.zeros(width)
        for _ in range(sweeps):
            v = np.nanmean(table - d, axis=1)
            d_new = np.nanmean(table - v[:, None], axis=0)
            d_new -= d_new.mean()
            if np.allclose(d_new, d, atol=1e-12):
                break
            d = d_new
        v = np.nanmean(table - d, axis=1)
        resid = np.where(have, table - d - v[:, None], np.nan)
        n = have.sum(axis=1)
        spread = np.array([np.nanstd(r, ddof=1) if c >= 2 else np.nan for r, c in zip(resid, n)])
        fallback = float(np.nanmedian(spread)) if np.isfinite(spread).any() else max(float(np.abs(v).max()), 1e-3)
        se = np.where(np.isfinite(spread), spread, fallback) / np.sqrt(n)
        return {s: (float(v[k]), float(se[k])) for k, s in enumerate(sets)}

    def best(self, k: int) -> list[tuple[int, ...]]:
        """The ``k`` sets of lowest estimated value (more windows first on ties)."""
        est = self.estimates()
        return sorted(self.values, key=lambda s: (est[s][0], -self.values[s].size, s))[:k]


@dataclass(frozen=True)
class SurrogateRaceOptions:
    fitness: str = option("kl", "what is minimised: kl (to the dense model's next-token distributions) or ce "
                                "(increase of the calibration loss)", choices=("kl", "ce"))
    healed: bool = option(False, "score every set after fitting its own linear-healing maps")
    max_tokens: int | None = option(None, "tokens the search may spend (default: measuring 2N sets on every window)",
                                          minimum=1)
    windows: int = option(32, "calibration windows the fitness is measured on (cut to the samples there are)",
                          minimum=2)
    heal_samples: int = option(16, "with healed: calibration samples the maps are fitted on (after the windows)",
                               minimum=1)
    ridge: float = option(1e-3, "with healed: linear healing's ridge", minimum=0.0)
    top_k: int = option(64, "with kl: most likely dense tokens kept per position", minimum=1)
    batch: int = option(8, "states proposed per round", minimum=1)
    near: int = option(2, "of those, states proposed near the best set so far (a proximity term on the surrogate)",
                       minimum=0)
    keep: int = option(2, "best sets raced again each round, and confirmed on every window at the end", minimum=1)
    first: int = option(8, "windows every proposal is measured on before racing drops any", minimum=2)
    z: float = option(2.5, "racing's drop threshold, in standard errors of the paired difference", minimum=0.1)
    prior: str = option("fisher", "prior QUBO: fisher (first-order expansion of the gate gradients), pairs, none",
                        choices=("fisher", "pairs", "none"))
    proposer: str = option("auto", "binary solver minimising the surrogate (auto: exact when small, else anneal)")
    seeds: str = option("block-influence,norm-ratio", "objectives whose lowest state is raced first")
    batch_size: int = option(8, "windows per forward pass", minimum=1)
    seed: int = option(0, "random seed of the Thompson draws, the random starts and the proposer", minimum=0)


class SurrogateRace(SurrogateSearch):
    """Surrogate search raced in tokens under any removal constraints (module docstring)."""

    name = "surrogate-race"
    description = ("Surrogate search raced in tokens: a Bayesian pairwise QUBO of the measured KL (or CE), healed or "
                   "not, refitted each round; any solver proposes its lowest unmeasured states under the removal "
                   "constraints (counts or a budget in parameters); racing gives more windows only to contenders.")
    options = SurrogateRaceOptions
    budgets = True

    def run(self, model, adapter, calibration, blocks, constraints, *, granularity, progress, fitness, healed,
            max_tokens, windows, heal_samples, ridge, top_k, batch, near, keep, first, z, prior, proposer, seeds,
            batch_size, seed):
        from ..evaluate.kl import RemovalKL  # torch: this module is listed by `lmshrink plugins`
        from ..heal.fitness import HealedFitness

        ids = calibration.input_ids
        n_windows = min(int(windows), int(ids.shape[0]) - (heal_samples if healed else 0))
        if n_windows < 2:
            raise LmshrinkError(f"surrogate-race needs at least 2 calibration windows to measure on "
                                f"({int(ids.shape[0])} samples{', less the fitting samples' if healed else ''}); "
                                "give more --samples.")
        meter = RemovalKL(model, adapter, ids[:n_windows], granularity=granularity, k=top_k, batch_size=batch_size)
        seq_len = int(ids.shape[1])
        measure = fitness
        source: Any = meter
        if healed:
            source = HealedFitness(meter, ids[n_windows:n_windows + heal_samples], ridge=ridge, batch_size=batch_size)
        base = meter.base_ce.per_window if fitness == "ce" else None

        def evaluate(removed: Sequence[int], a: int, b: int) -> np.ndarray:
            values = source.windows(removed, a, b, measure=measure)
            return values - base[a:b] if base is not None else values

        budget = int(max_tokens) if max_tokens is not None else 2 * len(blocks) * n_windows * seq_len
        rng = np.random.default_rng(seed)
        prior_w, prior_info = self._prior(prior, model, adapter, calibration, granularity, progress)
        initial = self._initial(prior_w, seeds, model, adapter, calibration, blocks, constraints, granularity,
                                proposer, batch, seed)
        # the prior's gradient pass and the seeds' hidden-state pass each read the calibration samples once
        upfront = ((prior != "none") + bool(str(seeds or "").strip())) * int(ids.numel())
        fitted = (lambda: source.fits * heal_samples * seq_len) if healed else (lambda: 0)
        result = self.search(constraints, len(blocks), evaluate, n_windows, tokens_per_window=seq_len,
                             max_tokens=budget, prior=prior_w, initial=initial, batch=batch, near=near, keep=keep,
                             first=first, z=z, proposer=proposer, rng=rng, progress=progress,
                             extra_tokens=lambda: upfront + fitted())
        info = {"fitness": fitness, "healed": healed, "windows": n_windows, "seq_len": seq_len,
                "tokens_spent": result.tokens, "token_budget": budget, "tokens_prior_and_seeds": upfront,
                "evaluations": result.evaluations,
                "rounds_run": len(result.rounds) - 1, "seconds": result.seconds, "prior": prior_info,
                "proposer": proposer, "dense_top_k_rest_mass": meter.reference.rest_mass,
                "fit": [r["fit"] for r in result.rounds if r.get("fit")],
                "measured": [{"state": list(s), "mean": m, "windows": w}
                             for s, m, w in zip(result.ranked, result.means, result.windows)]}
        top = min(10, len(result.ranked))
        return Selection([list(s) for s in result.ranked[:top]], result.means[:top], None, result.rounds, info)

    def search(self, constraints: Sequence[Any], num_units: int, evaluate: WindowMeasure, num_windows: int, *,
               tokens_per_window: int, max_tokens: int, prior: np.ndarray | None = None,
               initial: Sequence[tuple[int, ...]] = (), batch: int = 8, near: int = 2, keep: int = 2, first: int = 8,
               z: float = 2.5, proposer: str = "auto", rng: np.random.Generator | None = None,
               progress: bool = False, extra_tokens: Callable[[], int] | None = None) -> RaceSearchResult:
        """The search loop on any per-window fitness ``evaluate`` (module docstring); no model needed.

        ``initial`` are the first round's states (filled up to ``batch`` with random feasible sets); ``near`` of each
        round's ``batch`` proposals come from :meth:`_near` around the best set so far; ``prior`` the
        surrogate's prior weights (:func:`~.surrogate.qubo_weights`); ``extra_tokens()`` what the fitness spent
        besides the windows (healing fits), added to the count."""
        start = time.perf_counter()
        rng = rng or np.random.default_rng(0)
        measured = _Measured(evaluate, num_windows, tokens_per_window)
        first = min(first, num_windows)
        reserve = keep * num_windows * tokens_per_window  # the final confirmation
        spent = lambda: measured.tokens + (extra_tokens() if extra_tokens else 0)  # noqa: E731
        states = [tuple(sorted(s)) for s in initial if feasible(frozenset(s), constraints, num_units)]
        for _ in range(64 * batch):
            if len(states) >= batch:
                break
            s = tuple(sorted(random_order(constraints, rng)))
            if s not in states:
                states.append(s)
        states = list(dict.fromkeys(states))
        if not states:
            raise LmshrinkError("surrogate-race found no set that satisfies the removal constraints.")
        rounds: list[dict[str, Any]] = []
        outcome = race(states, measured, num_windows, first=first, z=z, keep=min(keep, len(states)),
                       tokens_per_window=tokens_per_window)
        rounds.append({"round": 0, "raced": [list(s) for s in states], "tokens": spent(),
                       "survivors": [list(states[c]) for c in outcome.survivors], "fit": None,
                       **self._leader(measured)})
        log(progress, f"surrogate-race: {len(states)} initial sets, budget {max_tokens:,} tokens")
        while spent() + batch * first * tokens_per_window + reserve <= max_tokens:
            surrogate = self._fitted(measured, num_units, prior)
            local = min(near, batch)
            proposals = self._propose(surrogate, constraints, num_units, batch - local, measured.values, proposer,
                                      rng) if batch > local else []
            nearby = self._near(surrogate, measured.best(1)[0], constraints, num_units, local,
                                set(measured.values) | set(proposals), proposer, rng)
            proposals += nearby
            proposals = [p for p in proposals if p not in measured.values]
            if not proposals:
                break
            predicted, _ = surrogate.predict(np.array([_state(p, num_units) for p in proposals]))
            incumbents = measured.best(keep)
            entrants = proposals + [s for s in incumbents if s not in proposals]
            outcome = race(entrants, measured, num_windows, first=first, z=z, keep=min(keep, len(entrants)),
                           tokens_per_window=tokens_per_window)
            observed = [measured.estimates()[p][0] for p in proposals]  # measured after the prediction
            rounds.append({"round": len(rounds), "proposed": [list(p) for p in proposals],
                           "near": [list(p) for p in nearby],
                           "predicted": predicted.tolist(), "measured": observed,
                           "fit": fit_quality(predicted, observed), "tokens": spent(),
                           "survivors": [list(entrants[c]) for c in outcome.survivors],
                           "alpha": surrogate.alpha, **self._leader(measured)})
            if progress and len(rounds) % 5 == 0:
                log(True, f"surrogate-race: {spent():,}/{max_tokens:,} tokens, best {rounds[-1]['best_value']:.5f}")
        for s in measured.best(keep):  # the finalists, on every window
            measured(s, 0, num_windows)
        est = measured.estimates()
        full = lambda s: measured.values[s].size == num_windows  # noqa: E731
        ranked = sorted(measured.values, key=lambda s: (not full(s), est[s][0], s))  # the choice has every window
        return RaceSearchResult(ranked, [est[s][0] for s in ranked], [int(measured.values[s].size) for s in ranked],
                                spent(), len(measured.values), time.perf_counter() - start, rounds)

    def _near(self, surrogate: PairwiseSurrogate, best: tuple[int, ...], constraints: Sequence[Any], n: int,
              want: int, skip: set[tuple[int, ...]], proposer: str, rng: np.random.Generator) -> list[tuple[int, ...]]:
        """Up to ``want`` unmeasured states near the best set so far x*: the lowest state of the posterior mean plus
        a proximity term λ·d(x, x*), d the Hamming distance, Σ_i x_i (1 − 2x*_i) + |x*| (linear in x), for
        λ = s, s/2, s/4, … with s the mean magnitude of the mean's linear weights. A soft trust region that the
        proposer solves under the removal constraints: the global proposals explore, these refine the leader."""
        lin, Q, c = weights_to_qubo(surrogate.mean_weights, n)
        star = _state(best, n).astype(np.float64)
        scale = float(np.mean(np.abs(lin))) or 1.0
        names = [f"x{i}" for i in range(n)]
        out: list[tuple[int, ...]] = []
        for j in range(want):
            lam = scale / 2**j
            problem = BinaryQuadraticProblem(names, lin + lam * (1.0 - 2.0 * star), Q, c + lam * float(star.sum()),
                                             list(constraints))
            found = self._lowest(problem, 1, proposer, int(rng.integers(2**31)), skip | set(out))
            out += found[:1]
        return out

    @staticmethod
    def _leader(measured: _Measured) -> dict[str, Any]:
        """The best set so far and its estimated value, for the trace."""
        best = measured.best(1)[0]
        return {"best": list(best), "best_value": measured.estimates()[best][0]}

    @staticmethod
    def _fitted(measured: _Measured, num_units: int, prior: np.ndarray | None) -> PairwiseSurrogate:
        """The surrogate fitted to every set's current estimate (refitted whole: estimates change as windows grow)."""
        surrogate = PairwiseSurrogate(num_units, prior)
        est = measured.estimates()
        sets = list(est)
        surrogate.observe(np.array([_state(s, num_units) for s in sets]), np.array([est[s][0] for s in sets]),
                          np.array([max(est[s][1], 1e-6) for s in sets]))
        return surrogate.fit()

    @staticmethod
    def _random_neighbours(measured: dict, constraints, want: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
        """Unmeasured sets one mutation away from the measured ones, best first by their first windows' mean
        (mutations keep counts and budgets)."""
        ranked = sorted(measured, key=lambda s: float(np.mean(measured[s][:2])))
        out: list[tuple[int, ...]] = []
        for s in ranked[: max(want, 1) * 4]:
            child = mutate(frozenset(s), constraints, rng)
            if child is not None:
                t = tuple(sorted(child))
                if t not in measured and t not in out:
                    out.append(t)
            if len(out) >= want:
                break
        return out


__all__ = ["RaceSearchResult", "SurrogateRace"]
