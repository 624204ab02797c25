"""EvoPress against a planted fitness (brute-force optimum, no model) and end to end on a tiny Llama."""

from __future__ import annotations

import itertools
import math
import json

import numpy as np
import pytest

from lmshrink.baselines.evopress import evolve, level_switch, mutate, parse_stages
from lmshrink.core import LmshrinkError
from lmshrink.core.removal import ParameterBudget, budget_constraint, removal_constraints

# 12 units of two sizes, like attention and MLP sub-layers (an MLP holds three attention's parameters)
WEIGHTS = [1, 3] * 6


class Planted:
    """f(S) = Σ a_i + Σ_{i<j ∈ S} b_ij, the same on every window; counts its calls."""

    tokens_per_window = 10
    max_windows = 16

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.a = rng.normal(size=12)
        b = rng.normal(scale=0.5, size=(12, 12))
        self.b = np.triu(b + b.T, 1)
        self.calls = 0

    def value(self, s) -> float:
        s = list(s)
        return float(self.a[s].sum() + self.b[np.ix_(s, s)].sum())

    def __call__(self, removed, windows):
        self.calls += 1
        return np.full(windows, self.value(removed))


def band(share: float):
    return budget_constraint("remove", list(range(12)), WEIGHTS, ParameterBudget(fraction=share), sum(WEIGHTS),
                             [f"u{i}" for i in range(12)])


def brute_force(fit: Planted, c) -> tuple[float, list[int]]:
    best = (np.inf, [])
    for bits in itertools.product([0, 1], repeat=12):
        x = np.array(bits)[None, :]
        if c.satisfied(x)[0]:
            s = [i for i in range(12) if bits[i]]
            best = min(best, (fit.value(s), s))
    return best


def test_level_switch_keeps_the_band_and_exchanges_units_of_unequal_size():
    c = band(0.25)  # T = 6 of 24: the band [6, 7]
    assert (c.lower, c.upper) == (6.0, 7.0)
    rng = np.random.default_rng(1)
    parent = frozenset([1, 3])  # two MLPs: 6
    sizes = set()
    for _ in range(200):
        child = level_switch(parent, c, rng)
        assert child is not None and child != parent
        total = sum(WEIGHTS[i] for i in child)
        assert 6 <= total <= 7
        sizes.add(len(child))
    assert len(sizes) > 1  # some exchanges trade an MLP for attention units, not one for one


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evopress_finds_the_brute_force_optimum_under_a_band(seed):
    fit = Planted(seed)
    c = band(0.25)
    optimum, argmin = brute_force(fit, c)
    result = evolve([c], fit, 12, generations=60, offspring=8, stages="2:4,4:2,8", start="random", seed=seed)
    assert result.fitness == pytest.approx(optimum)
    assert result.best == argmin
    x = np.zeros((1, 12))
    x[0, result.best] = 1
    assert c.satisfied(x)[0]
    for row in result.trace:  # the parent only improves
        assert row["fitness"] >= optimum - 1e-12
    fitnesses = [r["fitness"] for r in result.trace]
    assert fitnesses == sorted(fitnesses, reverse=True)


def test_every_child_satisfies_the_constraints_per_kind_and_kept():
    blocks_kind = ["attention", "mlp"] * 6

    class B:
        def __init__(self, i):
            self.index, self.kind, self.name = i, blocks_kind[i], f"u{i}"

    blocks = [B(i) for i in range(12)]
    cons = removal_constraints(blocks, {"attention": 2, "mlp": ParameterBudget(parameters=6)}, parameters=WEIGHTS)
    rng = np.random.default_rng(0)
    parent = frozenset([0, 2, 1, 3])
    for _ in range(300):
        child = mutate(parent, cons, rng)
        if child is None:
            continue
        x = np.zeros((1, 12))
        x[0, list(child)] = 1
        assert all(c.satisfied(x)[0] for c in cons)
        parent = child


def test_multi_step_selection_spends_fewer_tokens_than_scoring_every_child_fully():
    c = band(0.25)
    staged = evolve([c], Planted(0), 12, generations=10, offspring=8, stages="1:4,4:2,16", seed=0)
    full = evolve([c], Planted(0), 12, generations=10, offspring=8, stages="16", seed=0)
    assert staged.tokens < full.tokens
    # the report's counterfactual is what the single-stage run spends on the same children (same seed, same draws
    # until the parents part), so at least the first generation's children cost agrees
    assert staged.tokens_full >= staged.tokens
    assert full.tokens_full == full.tokens


def test_same_seed_same_result_and_a_token_cap():
    c = band(0.5)
    a = evolve([c], Planted(3), 12, generations=15, offspring=6, stages="1:3,4", seed=7)
    b = evolve([c], Planted(3), 12, generations=15, offspring=6, stages="1:3,4", seed=7)
    assert (a.best, a.fitness, a.tokens, a.trace) == (b.best, b.fitness, b.tokens, b.trace)
    capped = evolve([c], Planted(3), 12, generations=15, offspring=6, stages="1:3,4", seed=7, max_tokens=200)
    assert len(capped.trace) < 15 and capped.tokens < a.tokens


def test_stages_are_checked():
    assert parse_stages("4:4,16:2,64") == [(4, 4), (16, 2), (64, 1)]
    for bad in ("", "4:x", "0:1", "4:1,8:2"):
        with pytest.raises(LmshrinkError):
            parse_stages(bad)


def test_evopress_prunes_a_tiny_llama_at_a_quarter_of_its_sublayer_parameters(tiny_model_dir, text_file, tmp_path):
    from lmshrink.cli import main

    out = tmp_path / "run"
    code = main(["prune", "--model", str(tiny_model_dir), "--data", str(text_file), "--remove", "25%",
                 "--granularity", "sublayer", "--method", "evopress", "--method-option", "generations=3",
                 "--method-option", "offspring=4", "--method-option", "stages=1:2,2", "--samples", "4",
                 "--seq-len", "16", "--eval-tokens", "64", "--quiet", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    budget = report["budget"]
    info = report["method"]["selection"]["info"]
    assert info["tokens_spent"] > 0 and info["tokens_spent"] <= info["tokens_scoring_every_child_fully"]
    assert f"The search spent {info['tokens_spent']:,} tokens" in (out / "report.md").read_text()
    (band,) = budget["bands"]
    assert band["lower"] <= budget["parameters_removed"] == band["removed"] <= band["upper"]
    assert band["lower"] == math.ceil(0.25 * budget["decoder_parameters"])
    assert budget["share_of_decoder"] == budget["parameters_removed"] / budget["decoder_parameters"]
    # the model loses the units' parameters and at most the norm (hidden size 32) in front of each removed sub-layer,
    # which no unit counts
    lost = report["parameters_before"] - report["parameters_after"]
    assert budget["parameters_removed"] <= lost <= budget["parameters_removed"] + 32 * len(report["removed"])
    import lmshrink

    assert '"share_of_decoder"' in (out / "model" / "lmshrink_config.json").read_text()  # the saved model says it
    model = lmshrink.load_compressed(out / "model")
    assert sum(p.numel() for p in model.parameters()) == report["parameters_after"]
