"""Surrogate search (the ``surrogate`` removal method): SLEB's budget, and on a planted problem it finds the
optimum within a budget far below enumeration; on a tiny model it returns measured sets, best first."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lmshrink.adapters.llama import LlamaAdapter
from lmshrink.baselines import get_method
from lmshrink.core import BinaryQuadraticProblem, Block, Constraint
from lmshrink.core.removal import ParameterBudget, budget_constraint
from lmshrink.evaluate.measured import LossEstimate, RemovalLoss
from lmshrink.search.surrogate_search import SurrogateSearch, layer_aligned, layer_costs, layers_of, sleb_budget
from lmshrink.testing import sample_ids, tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")
ADAPTER = LlamaAdapter()


class Calib:
    def __init__(self, ids):
        self.input_ids = ids
        self.source = "test"
        self.info = {}

    def fingerprint(self):
        return "test"

    def subset(self, n):
        return Calib(self.input_ids[:n])


def test_sleb_budget():
    assert sleb_budget([Constraint(tuple(range(30)), 6)]) == 30 + 29 + 28 + 27 + 26 + 25
    assert sleb_budget([Constraint((0, 1, 2), 1), Constraint((3, 4, 5, 6), 2), Constraint((7,), 0)]) == 7 + 6 + 3


class PlantedLoss:
    """A fake oracle: loss = 3 + planted QUBO energy + per-window noise (fixed windows, as a real one)."""

    def __init__(self, n, seed):
        rng = np.random.default_rng(seed)
        self.lin = rng.uniform(0.0, 1.0, n)
        A = rng.normal(size=(n, n)) * 0.2
        self.Q = np.triu(A + A.T, 1)
        self.window_noise = rng.normal(0, 0.01, (32, 1))
        self.calls = set()
        self.base = self([])

    def energy(self, s):
        x = np.zeros(len(self.lin))
        x[list(s)] = 1
        return float(self.lin @ x + x @ self.Q @ x)

    def __call__(self, s):
        s = tuple(sorted(s))
        if s:
            self.calls.add(s)
        e = self.energy(s)
        return LossEstimate(3 + e + self.window_noise[:, 0] * (1 + e) + 0.002 * np.arange(32) % 3)


def test_finds_a_planted_optimum_within_a_small_budget():
    n, m = 14, 4
    model = tiny_llama(layers=n)
    oracle = PlantedLoss(n, seed=1)
    energies = {c: oracle.energy(c) for c in itertools.combinations(range(n), m)}
    best = min(energies, key=energies.get)
    method = SurrogateSearch(loss=oracle)
    sel = method.select(model, ADAPTER, Calib(sample_ids(model, 4, 8)), m, prior="none", seeds="", budget=60,
                        batch=4, proposer="exact", seed=0)
    assert len(oracle.calls) == 60 < len(energies) / 10
    assert tuple(sel.best) == best
    assert sel.info["evaluations"] == 60
    # out-of-sample fit quality is reported per round and becomes good
    late = [t["fit"]["spearman"] for t in sel.trace[-5:] if t["fit"] and t["fit"]["n"] > 2]
    assert late and np.nanmean(late) > 0.5
    assert sel.info["best_at_half_budget"]["evaluations"] >= 30


def test_on_a_tiny_model_it_returns_measured_sets_best_first():
    model = tiny_llama(layers=6)
    ids = sample_ids(model, 8, 12)
    sel = get_method("surrogate").select(model, ADAPTER, Calib(ids), 2, budget=8, batch=3, samples=8,
                                         proposer="exact", progress=False)
    meter = RemovalLoss(model, ADAPTER, ids)
    losses = [meter(c).mean for c in sel.candidates]
    assert losses == sorted(losses)
    np.testing.assert_allclose(sel.scores, losses, rtol=1e-6)
    assert sel.info["evaluations"] == 8 and len(sel.candidates) == 8
    assert sel.info["prior"]["name"] == "fisher"


def test_bad_budget_is_one_sentence():
    from lmshrink.core import LmshrinkError

    model = tiny_llama(layers=4)
    with pytest.raises(LmshrinkError, match="budget"):
        get_method("surrogate").select(model, ADAPTER, Calib(sample_ids(model, 4, 8)), 1, budget=0, prior="none")


def test_a_layer_aligned_start_takes_whole_layers_by_energy_then_what_still_fits():
    # four layers of an attention (1 parameter) and an MLP (3): a band of [6, 7] parameters
    blocks = [Block(2 * layer + k, f"l{layer}.{kind}", kind, layer)
              for layer in range(4) for k, kind in enumerate(("attention", "mlp"))]
    weights = [1, 3] * 4
    band = budget_constraint("remove", list(range(8)), weights, ParameterBudget(parameters=6), 16.0,
                             [b.name for b in blocks])
    assert (band.lower, band.upper) == (6.0, 7.0)
    linear = np.array([0.5, 0.5, 0.1, 0.2, 2.0, 2.0, 0.2, 0.3])
    Q = np.zeros((8, 8))
    Q[0, 1] = Q[1, 0] = 0.5  # removing layer 0 whole costs 0.5 + 0.5 + 2·0.5 = 2: ranked after layer 3 (0.5)
    problem = BinaryQuadraticProblem([b.name for b in blocks], linear, Q, 0.0, [band])
    # by hand: layer 1 (0.3) whole, layer 3 (0.5): its attention fits (5), its MLP would not (8 > 7); then the
    # attention of layer 0 (next: 2.0, before layer 2's 4.0) reaches the band's lower bound 6
    costs = layer_costs(problem, layers_of(blocks))
    assert costs == pytest.approx({0: 2.0, 1: 0.3, 2: 4.0, 3: 0.5})
    assert layer_aligned(costs, blocks, [band]) == (0, 2, 3, 6)
    assert problem.is_feasible(np.isin(np.arange(8), [0, 2, 3, 6]).astype(int))
    # in whole layers, there is nothing to align
    whole = [Block(i, f"l{i}", "layer", i) for i in range(8)]
    assert layer_aligned(costs, whole, [band]) is None
