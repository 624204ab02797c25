"""surrogate-race: on a planted per-window fitness under a parameter band it finds the brute-force optimum and counts
its tokens exactly; on a tiny Llama at sub-layer granularity its choice and score equal a brute force of the measured
KL over every feasible set, healed or not."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import numpy as np
import pytest

from lmshrink.adapters.llama import LlamaAdapter
from lmshrink.core import LmshrinkError
from lmshrink.core.removal import ParameterBudget, budget_constraint, model_constraints, parse_remove
from lmshrink.evaluate.kl import RemovalKL
from lmshrink.heal.fitness import HealedFitness
from lmshrink.search.surrogate import weights_to_qubo
from lmshrink.search.surrogate_race import SurrogateRace
from lmshrink.testing import sample_ids, tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")
# 12 units of two sizes, like attention and MLP sub-layers
WEIGHTS = [1, 3] * 6
WINDOWS, TOKENS_PER_WINDOW = 32, 10


def band(share: float):
    return budget_constraint("remove", list(range(12)), WEIGHTS, ParameterBudget(fraction=share), sum(WEIGHTS),
                             [f"u{i}" for i in range(12)])


class Planted:
    """ℓ_w(S) = Σ a_i + Σ_{i<j ∈ S} b_ij + d_w + ε_{S,w}: a QUBO, a per-window difficulty d_w every set shares
    (so paired differences are what tells sets apart) and a little noise of each set's own; counts the windows
    asked."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.a = rng.normal(size=12)
        b = rng.normal(scale=0.5, size=(12, 12))
        self.b = np.triu(b + b.T, 1)
        self.difficulty = rng.normal(scale=1.0, size=WINDOWS)
        self.windows_asked = 0

    def value(self, s) -> float:
        s = list(s)
        return float(self.a[s].sum() + self.b[np.ix_(s, s)].sum())

    def __call__(self, removed, a, b):
        self.windows_asked += b - a
        noise = np.random.default_rng(hash(tuple(sorted(removed))) % 2**32).normal(scale=0.05, size=WINDOWS)
        return self.value(removed) + self.difficulty[a:b] + noise[a:b]


def feasible_sets(constraint, n):
    for bits in itertools.product([0, 1], repeat=n):
        if constraint.satisfied(np.array(bits)[None, :])[0]:
            yield tuple(i for i in range(n) if bits[i])


@pytest.mark.parametrize("near", [0, 2])
def test_it_finds_the_planted_optimum_inside_a_parameter_band_and_counts_every_token(near):
    c = band(0.25)
    fit = Planted()
    best = min(feasible_sets(c, 12), key=fit.value)
    result = SurrogateRace().search([c], 12, fit, WINDOWS, tokens_per_window=TOKENS_PER_WINDOW,
                                    max_tokens=4000, batch=6, near=near, keep=2, first=4, proposer="exact",
                                    rng=np.random.default_rng(0))
    assert result.ranked[0] == best
    assert all(c.satisfied(np.isin(np.arange(12), s)[None, :])[0] for s in result.ranked)
    # every window passed to the fitness is counted once, and the budget holds
    assert result.tokens == fit.windows_asked * TOKENS_PER_WINDOW <= 4000
    # racing measured fewer windows than every set on every window, and the winner on all of them
    assert result.tokens < result.evaluations * WINDOWS * TOKENS_PER_WINDOW
    assert result.windows[0] == WINDOWS
    assert result.means[0] == pytest.approx(np.mean(Planted()(best, 0, WINDOWS)))
    # each round after the first predicted its proposals before measuring them
    assert len(result.rounds) > 2 and all(r["fit"]["n"] == len(r["proposed"]) for r in result.rounds[1:])
    assert all(len(r["near"]) == near for r in result.rounds[1:])


def test_a_budget_too_small_for_a_round_stops_after_the_first_race():
    fit = Planted()
    result = SurrogateRace().search([band(0.25)], 12, fit, WINDOWS, tokens_per_window=TOKENS_PER_WINDOW,
                                    max_tokens=1, batch=4, keep=1, first=4, proposer="exact",
                                    rng=np.random.default_rng(1))
    assert len(result.rounds) == 1 and result.windows[0] == WINDOWS


@pytest.fixture(scope="module")
def tiny():
    model = tiny_llama(layers=3, tie=False)
    return model, LlamaAdapter(), SimpleNamespace(input_ids=sample_ids(model, batch=10, seq_len=16, seed=2))


@pytest.mark.parametrize("healed", [False, True])
def test_on_a_tiny_llama_it_chooses_the_feasible_set_of_lowest_measured_kl(tiny, healed):
    model, adapter, calibration = tiny
    method = SurrogateRace()
    selection = method.select(model, adapter, calibration, "40%", granularity="sublayer", fitness="kl",
                              healed=healed, windows=6, heal_samples=4, first=3, z=50.0, batch=4, keep=2,
                              max_tokens=10**7, prior="none", seeds="", proposer="exact")
    # brute force: every set the band allows, measured on all six windows by a meter of its own
    blocks = adapter.blocks(model, "sublayer")
    (c,), _, _ = model_constraints(adapter, model, blocks, parse_remove("40%"), None)
    meter = RemovalKL(model, adapter, calibration.input_ids[:6], granularity="sublayer", k=64)
    score = HealedFitness(meter, calibration.input_ids[6:10]) if healed else meter
    every = list(feasible_sets(c, len(blocks)))
    truth = {s: score(list(s)).mean for s in every}
    info = selection.info
    sets = [tuple(m["state"]) for m in info["measured"]]
    assert len(sets) == info["evaluations"] == len(set(sets))
    assert set(sets) == set(every)  # a small problem: the search measured every feasible set
    assert tuple(selection.best) == min(truth, key=truth.get)
    assert selection.scores[0] == pytest.approx(truth[tuple(selection.best)], rel=1e-9, abs=1e-12)
    assert info["tokens_spent"] <= info["token_budget"] and info["healed"] is healed


def test_surrogate_race_prunes_from_the_command_line(tiny_model_dir, text_file, tmp_path):
    from lmshrink.cli import main

    out = tmp_path / "run"
    code = main(["prune", "--model", str(tiny_model_dir), "--data", str(text_file), "--remove", "25%",
                 "--granularity", "sublayer", "--method", "surrogate-race", "--method-option", "windows=4",
                 "--method-option", "first=2", "--method-option", "batch=2", "--method-option", "max_tokens=2000",
                 "--samples", "6", "--seq-len", "16", "--eval-tokens", "64", "--quiet", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    info = report["method"]["selection"]["info"]
    assert 0 < info["tokens_spent"] <= info["token_budget"] == 2000
    (b,) = report["budget"]["bands"]
    assert b["lower"] <= report["budget"]["parameters_removed"] <= b["upper"]


def test_bad_settings_get_one_sentence(tiny):
    model, adapter, calibration = tiny
    with pytest.raises(LmshrinkError, match="at least 2 calibration windows"):
        SurrogateRace().select(model, adapter, SimpleNamespace(input_ids=calibration.input_ids[:5]), "40%",
                               granularity="sublayer", healed=True, heal_samples=4, prior="none", seeds="")


def test_a_whole_layer_objective_seeds_a_sub_layer_search_with_its_layers_filled_to_the_budget():
    from lmshrink.data import Calibration
    from lmshrink.plugins import get_objective

    model, adapter = tiny_llama(layers=3, tie=False), LlamaAdapter()
    calibration = Calibration(sample_ids(model, batch=10, seq_len=16, seed=2), "random tokens")
    blocks = adapter.blocks(model, "sublayer")
    constraints, _, _ = model_constraints(adapter, model, blocks, parse_remove("40%"), None)
    starts = SurrogateRace()._initial(None, "block-influence", model, adapter, calibration, blocks, constraints,
                                      "sublayer", "exact", 4, 0)
    # block influence refuses sub-layers; in layers it ranks them, and the start takes the lowest layer whole, then
    # the next layer's units while the band [40% of the decoder, + one attention] leaves room
    bi = get_objective("block-influence").build(model, adapter, calibration, granularity="layer", progress=False)
    first, second = np.argsort(bi.linear)[:2]
    weights = [3072, 6144] * 3  # attention and MLP of the tiny model
    (c,) = constraints
    assert list(c.weight_array()) == weights and 3072 + 6144 < c.lower <= 2 * 3072 + 6144  # a layer and an attention
    assert starts == [tuple(sorted((2 * first, 2 * first + 1, 2 * second)))]


def test_near_proposals_are_the_lowest_states_of_the_surrogate_plus_a_hamming_term_by_brute_force():
    rng = np.random.default_rng(3)
    w = rng.normal(size=1 + 12 + 66)  # offset, 12 linear, 66 pairwise weights (the surrogate's layout)
    lin, Q, c = weights_to_qubo(w, 12)
    band_ = band(0.25)
    every = list(feasible_sets(band_, 12))
    best = min(every, key=lambda s: lin[list(s)].sum() + Q[np.ix_(list(s), list(s))].sum())
    skip = {best}
    got = SurrogateRace()._near(SimpleNamespace(mean_weights=w), best, [band_], 12, 2, set(skip), "exact",
                                np.random.default_rng(0))
    s = float(np.mean(np.abs(lin)))
    for j, found in enumerate(got):
        def energy(t, lam=s / 2**j):
            x = np.isin(np.arange(12), t).astype(float)
            return c + x @ lin + x @ Q @ x + lam * len(set(t) ^ set(best))
        taken = skip | set(got[:j])
        assert found == min((t for t in every if t not in taken), key=energy)
    assert len(got) == 2 and best not in got
