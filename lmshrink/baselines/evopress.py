"""EvoPress-style removal (Sieberling et al., ICML 2025, depth pruning): a (1+λ) evolutionary search over removal
sets that satisfy the removal constraints, with multi-step selection.

State: a removal set S that satisfies every constraint of the spec (a count per group, or a parameter budget's band
L ≤ Σ_i w_i x_i ≤ U, :mod:`lmshrink.core.removal`). Each generation:

1. **Offspring.** λ children of the parent, each made by a few *level-switch* mutations. One mutation works inside
   one constraint group: it puts back r ∈ {1, 2, 3} removed units, then removes kept units of the group (not the ones
   just put back) in a random order, skipping a unit that would push Σ w x above U, until Σ w x reaches a point
   drawn uniformly in [L, U] (so every level of the band is visited, not only its floor). With equal
   sizes this is an r-for-r swap; with unequal sizes it is the r-for-k exchange that keeps the band (e.g. one MLP
   sub-layer for three attention sub-layers when an MLP holds three times the parameters). A mutation that cannot
   reach the band is drawn again. Every child therefore satisfies the constraints by construction.
2. **Multi-step selection.** Stage 1 scores every child on a few calibration windows, the best ``k_1`` go on to be
   scored on more windows, ..., and the last stage keeps one survivor, scored on the most windows. The parent is
   replaced only when the survivor's fitness is lower than the parent's on those same windows.

Fitness is a :class:`Fitness`: ``fitness(removed, windows)`` returns one value per window on the first ``windows``
calibration windows (lower is better); a set's fitness on a stage is the mean. The default, :class:`LossFitness`,
is the calibration cross-entropy measured mid-stack (:class:`~lmshrink.evaluate.measured.RemovalLoss`); the KL
divergence to the dense model, which the paper uses, plugs in through ``EvoPressRemoval(fitness=...)``.

The cost is counted in tokens: a set measured on w windows of s tokens costs w·s tokens (a set measured before on
the same windows costs nothing). The report gives the tokens spent and what scoring every child on the last stage's
windows would have cost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from ..core import option
from ..core.errors import LmshrinkError
from ..core.method import RemovalMethod, Selection
from ..objectives.common import require_finite
from .base import greedy_order


class Fitness(Protocol):
    """What EvoPress minimises: ``fitness(removed, windows)`` gives one value per window (lower is better) on the
    first ``windows`` of its ``max_windows`` windows, each window ``tokens_per_window`` tokens long."""

    tokens_per_window: int
    max_windows: int

    def __call__(self, removed: Sequence[int], windows: int) -> np.ndarray: ...


class LossFitness:
    """The default fitness: per-window calibration loss (mean next-token NLL) with ``removed`` gated off, measured
    mid-stack on the first ``windows`` rows of ``input_ids`` (one :class:`RemovalLoss` per window count used)."""

    def __init__(self, model: Any, adapter: Any, input_ids: Any, *, granularity: str, batch_size: int = 8) -> None:
        self.model, self.adapter, self.input_ids = model, adapter, input_ids
        self.granularity, self.batch_size = granularity, batch_size
        self.max_windows = int(input_ids.shape[0])
        self.tokens_per_window = int(input_ids.shape[1])
        self._meters: dict[int, Any] = {}

    description = "calibration loss (mean next-token NLL per window)"

    def __call__(self, removed: Sequence[int], windows: int) -> np.ndarray:
        from ..evaluate.measured import RemovalLoss

        if windows not in self._meters:
            self._meters[windows] = RemovalLoss(self.model, self.adapter, self.input_ids[:windows],
                                                granularity=self.granularity, batch_size=self.batch_size)
        values = self._meters[windows](removed).per_window
        require_finite(values, f"the calibration loss without blocks {sorted(removed)}", self.model, self.adapter,
                       self.input_ids[:windows], self.granularity)
        return values


# --- options --------------------------------------------------------------------------------------------------
def parse_stages(text: str | Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The selection stages, ``"4:4,16:2,64"`` → [(4, 4), (16, 2), (64, 1)]: (windows scored on, survivors kept);
    the last stage keeps one survivor."""
    if not isinstance(text, str):
        stages = [(int(w), int(k)) for w, k in text]
    else:
        stages = []
        for part in (p.strip() for p in text.split(",")):
            windows, _, keep = part.partition(":")
            try:
                stages.append((int(windows), int(keep) if keep.strip() else 1))
            except ValueError:
                raise LmshrinkError(f"EvoPress stages {text!r}: expected windows:survivors pairs such as "
                                    "'4:4,16:2,64' (the last keeps one).") from None
    if not stages:
        raise LmshrinkError("EvoPress needs at least one selection stage.")
    if any(w < 1 or k < 1 for w, k in stages):
        raise LmshrinkError(f"EvoPress stages {text!r}: windows and survivors must be at least 1.")
    if any(b[1] > a[1] for a, b in zip(stages, stages[1:])):
        raise LmshrinkError(f"EvoPress stages {text!r}: survivors cannot grow from one stage to the next.")
    stages[-1] = (stages[-1][0], 1)
    return stages


# --- mutation -------------------------------------------------------------------------------------------------
def _movable(constraints: Sequence[Any]) -> list[int]:
    """Groups where a mutation can change something: some unit may go and some may stay (not a count of 0 or of
    every unit)."""
    out = []
    for k, c in enumerate(constraints):
        if len(c.indices) < 2 or (c.upper is not None and c.upper <= 0):
            continue
        if c.is_cardinality and c.equals == len(c.indices):
            continue
        out.append(k)
    return out


def level_switch(removed: frozenset[int], constraint: Any, rng: np.random.Generator, *, max_back: int = 3,
                 tries: int = 32) -> frozenset[int] | None:
    """One mutation inside ``constraint``'s group (see the module docstring); None when ``tries`` draws all fail."""
    idx = np.asarray(constraint.indices)
    w = dict(zip(constraint.indices, constraint.weight_array()))
    tol = constraint.tolerance()
    lower = -np.inf if constraint.lower is None else constraint.lower
    upper = np.inf if constraint.upper is None else constraint.upper
    inside = [i for i in constraint.indices if i in removed]
    if not inside:
        return None
    for _ in range(tries):
        r = int(rng.integers(1, min(max_back, len(inside)) + 1))
        back = set(rng.choice(inside, size=r, replace=False).tolist())
        chosen = [i for i in inside if i not in back]
        total = sum(w[i] for i in chosen)
        pool = [int(i) for i in rng.permutation(idx) if i not in removed]
        # fill up to a point drawn in the band, so that every level of the band is reached, not only its floor
        goal = lower if not np.isfinite(upper) else rng.uniform(max(lower, 0.0), upper)
        for i in pool:
            if total >= goal - tol:
                break
            if total + w[i] <= upper + tol:
                chosen.append(i)
                total += w[i]
        if lower - tol <= total <= upper + tol and (set(chosen) != set(inside)):
            return (removed - set(inside)) | frozenset(chosen)
    return None


def mutate(parent: frozenset[int], constraints: Sequence[Any], rng: np.random.Generator, *,
           max_mutations: int = 3) -> frozenset[int] | None:
    """A child: m level-switch mutations in random movable groups, m = min of two uniform draws from
    1..``max_mutations`` (one mutation most often)."""
    groups = _movable(constraints)
    if not groups:
        return None
    m = int(min(rng.integers(1, max_mutations + 1), rng.integers(1, max_mutations + 1)))
    child = parent
    for _ in range(m):
        k = groups[int(rng.integers(len(groups)))]
        nxt = level_switch(child, constraints[k], rng)
        child = nxt if nxt is not None else child
    return child if child != parent else None


def _removable(constraints: Sequence[Any]) -> list[int]:
    """Units that may go (a group held at 0, such as "kept", has none)."""
    return [i for c in constraints if c.upper is None or c.upper > 0 for i in c.indices]


def random_order(constraints: Sequence[Any], rng: np.random.Generator) -> list[int]:
    """A random set that satisfies ``constraints``, as the order its units were added in: each group filled in a
    random order (a band up to its lower bound, never past its upper one)."""
    units = _removable(constraints)
    noise = {i: float(v) for i, v in zip(units, rng.random(len(units)))}
    order, _ = greedy_order(constraints, lambda removed, allowed: {i: noise[i] for i in allowed})
    return order


def feasible(removed: frozenset[int], constraints: Sequence[Any], num_units: int) -> bool:
    """Whether the set satisfies every constraint."""
    x = np.zeros((1, num_units))
    x[0, list(removed)] = 1
    return all(bool(c.satisfied(x)[0]) for c in constraints)


# --- the search -----------------------------------------------------------------------------------------------
@dataclass
class EvoResult:
    """The search's outcome: the best set, its fitness on the last stage's windows, the cost, one row per
    generation."""

    best: list[int]
    fitness: float
    tokens: int
    tokens_full: int
    evaluations: int
    trace: list[dict[str, Any]] = field(default_factory=list)
    start: list[int] = field(default_factory=list)


class _Scorer:
    """Memoised mean fitness per (set, windows), counting the tokens of every new measurement."""

    def __init__(self, fitness: Fitness) -> None:
        self.fitness = fitness
        self.memo: dict[tuple[frozenset[int], int], float] = {}
        self.tokens = 0
        self.evaluations = 0

    def __call__(self, s: frozenset[int], windows: int) -> float:
        key = (s, windows)
        if key not in self.memo:
            self.memo[key] = float(np.mean(self.fitness(sorted(s), windows)))
            self.tokens += windows * int(self.fitness.tokens_per_window)
            self.evaluations += 1
        return self.memo[key]


def evolve(constraints: Sequence[Any], fitness: Fitness, num_units: int, *, generations: int = 20,
           offspring: int = 16, stages: str | Sequence[tuple[int, int]] = "4:4,16:2,64", start: str = "single",
           max_mutations: int = 3, max_tokens: int | None = None, seed: int = 0,
           progress: bool = False) -> EvoResult:
    """Run the (1+λ) search (module docstring) from a start that satisfies ``constraints``.

    ``start`` is ``"single"`` (fill each group greedily by the fitness of removing each unit alone, on the first
    stage's windows) or ``"random"`` (fill in a random order). Stages ask for at most ``fitness.max_windows``
    windows (more are cut to that). Deterministic for a given ``seed`` and fitness."""
    stage_list = [(min(w, fitness.max_windows), k) for w, k in parse_stages(stages)]
    final = stage_list[-1][0]
    if start not in ("single", "random"):
        raise LmshrinkError(f"EvoPress start {start!r}: expected 'single' or 'random'.")
    rng = np.random.default_rng(seed)
    score = _Scorer(fitness)
    if start == "single":
        single = {i: score(frozenset([i]), stage_list[0][0])
                  for i in tqdm(_removable(constraints), desc="evopress start", disable=not progress, leave=False)}
        order, _ = greedy_order(constraints, lambda removed, allowed: {i: single[i] for i in allowed})
    else:
        order = random_order(constraints, rng)
    parent = frozenset(order)
    if not feasible(parent, constraints, num_units):
        raise LmshrinkError("EvoPress could not build a start that satisfies the removal constraints.")
    parent_fit = score(parent, final)
    trace: list[dict[str, Any]] = []
    full_tokens = score.tokens  # what scoring every child on the last stage alone would have cost
    bar = tqdm(range(generations), desc="evopress", disable=not progress, leave=False)
    for gen in bar:
        if max_tokens is not None and score.tokens >= max_tokens:
            break
        children: list[frozenset[int]] = []
        for _ in range(offspring * 8):
            if len(children) == offspring:
                break
            child = mutate(parent, constraints, rng, max_mutations=max_mutations)
            if child is not None and child not in children:
                children.append(child)
        if not children:
            break
        full_tokens += sum(final * fitness.tokens_per_window for c in children if (c, final) not in score.memo)
        pool = children
        for windows, keep in stage_list:
            values = [score(c, windows) for c in pool]
            ranked = sorted(range(len(pool)), key=lambda j: (values[j], sorted(pool[j])))
            pool = [pool[j] for j in ranked[:keep]]
        survivor = pool[0]
        survivor_fit = score(survivor, final)
        improved = survivor_fit < parent_fit
        if improved:
            parent, parent_fit = survivor, survivor_fit
        trace.append({"generation": gen + 1, "fitness": parent_fit, "improved": improved,
                      "children": len(children), "tokens": score.tokens})
        bar.set_postfix(fitness=f"{parent_fit:.4f}", tokens=score.tokens)
    bar.close()
    return EvoResult(sorted(parent), parent_fit, score.tokens, full_tokens, score.evaluations, trace, sorted(order))


# --- the removal method ---------------------------------------------------------------------------------------
#: builds the fitness of a run: ``factory(model, adapter, input_ids, granularity=..., batch_size=...)``
FitnessFactory = Callable[..., Fitness]


@dataclass(frozen=True)
class EvoPressOptions:
    generations: int = option(20, "generations of the (1+λ) search", minimum=1)
    offspring: int = option(16, "children per generation (λ)", minimum=1)
    stages: str = option("4:4,16:2,64", "selection stages windows:survivors, e.g. 4:4,16:2,64 (the last keeps one; "
                                        "windows beyond the calibration samples are cut to them)")
    start: str = option("single", "start: single (greedy by single-removal fitness) or random",
                                  choices=("single", "random"))
    mutations: int = option(3, "most level-switch mutations per child", minimum=1)
    max_tokens: int | None = option(None, "stop once this many tokens are spent (None: run every generation)",
                                          minimum=1)
    seed: int = option(0, "seed of the mutations", minimum=0)
    batch_size: int = option(8, "windows per forward pass", minimum=1)


class EvoPressRemoval(RemovalMethod):
    """(1+λ) evolutionary search over removal sets with multi-step selection (module docstring)."""

    name = "evopress"
    description = ("EvoPress: (1+λ) evolutionary search over removal sets with level-switch mutations that keep the "
                   "budget, and multi-step selection on growing numbers of calibration windows.")
    budgets = True
    options = EvoPressOptions

    def __init__(self, fitness: FitnessFactory | None = None) -> None:
        #: the fitness factory; None is the calibration loss (:class:`LossFitness`)
        self.fitness = fitness or LossFitness

    def run(self, model, adapter, calibration, blocks, constraints, *, granularity, progress, generations,
            offspring, stages, start, mutations, max_tokens, seed, batch_size):
        fit = self.fitness(model, adapter, calibration.input_ids, granularity=granularity, batch_size=batch_size)
        result = evolve(constraints, fit, len(blocks), generations=generations, offspring=offspring, stages=stages,
                        start=start, max_mutations=mutations, max_tokens=max_tokens, seed=seed, progress=progress)
        stage_list = [(min(w, fit.max_windows), k) for w, k in parse_stages(stages)]
        info = {"tokens_spent": result.tokens, "tokens_scoring_every_child_fully": result.tokens_full,
                "evaluations": result.evaluations, "generations_run": len(result.trace),
                "improvements": sum(r["improved"] for r in result.trace),
                "stages": [{"windows": w, "survivors": k, "tokens": w * fit.tokens_per_window} for w, k in stage_list],
                "fitness": getattr(fit, "description", type(fit).__name__), "start": result.start}
        return Selection([result.best], [result.fitness], None, result.trace, info)
