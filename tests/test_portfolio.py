"""The candidate portfolio (lmshrink.portfolio): sources parsed against the registries, sets deduplicated with
every source kept, energies under each objective, and the lowest validation loss chosen, with paired errors."""

from __future__ import annotations

import numpy as np
import pytest

from lmshrink.core import BinaryQuadraticProblem, LmshrinkError
from lmshrink.evaluate.measured import LossEstimate
from lmshrink.portfolio import Portfolio, parse_sources


class FakeMeter:
    """Validation losses chosen by the test: a common per-window difficulty plus a per-set level."""

    def __init__(self, levels, noise=0.01):
        rng = np.random.default_rng(0)
        self.difficulty = rng.normal(3.0, 0.5, 40)
        self.jitter = {k: rng.normal(0, noise, 40) for k in levels}
        self.levels = levels
        self.calls = []

    def many(self, sets, desc=""):
        self.calls += [tuple(s) for s in sets]
        return [LossEstimate(self.difficulty + self.levels[tuple(s)] + self.jitter[tuple(s)]) for s in sets]


def test_sources_parse_with_counts_presets_and_did_you_mean():
    specs = parse_sources(["fisher-fo:10", "pairs", "sleb", "angular:3"], default_k=2)
    assert [(s.label, s.kind, s.name, s.options, s.k) for s in specs] == [
        ("fisher-fo", "objective", "fisher", {"first_order": True}, 10),
        ("pairs", "objective", "pairs", {}, 2),
        ("sleb", "method", "sleb", {}, 2),
        ("angular", "method", "angular", {}, 3),
    ]
    with pytest.raises(LmshrinkError, match="Did you mean 'sleb'"):
        parse_sources(["slab"])
    with pytest.raises(LmshrinkError, match="count"):
        parse_sources(["fisher:x"])
    with pytest.raises(LmshrinkError, match="at least 1"):
        parse_sources(["fisher:0"])


def test_the_portfolio_picks_the_lowest_validation_loss():
    p = Portfolio()
    p.add([3, 1], "fisher#1")
    p.add([1, 3], "sleb")  # the same set: one candidate, two sources
    p.add([2, 4], "angular")
    p.add([0, 5], "norm-ratio")
    p.candidates[1].error = "cannot run"
    assert len(p) == 3 and p.candidates[0].sources == ["fisher#1", "sleb"]
    meter = FakeMeter({(1, 3): 0.20, (2, 4): 0.05, (0, 5): 0.12})
    p.validate(meter)
    assert (2, 4) not in meter.calls  # not runnable: not measured
    assert p.best().indices == [0, 5]
    rows = {tuple(r["indices"]): r for r in p.comparison()}
    assert rows[(1, 3)]["delta"] == pytest.approx(0.08, abs=0.01)
    diff = (meter.jitter[(1, 3)] + 0.20) - (meter.jitter[(0, 5)] + 0.12)
    assert rows[(1, 3)]["se"] == pytest.approx(diff.std(ddof=1) / np.sqrt(40))
    assert rows[(1, 3)]["separated"] and p.separation_note() is None


def test_a_slice_that_cannot_separate_is_said():
    p = Portfolio()
    p.add([0], "a")
    p.add([1], "b")
    p.validate(FakeMeter({(0,): 0.100, (1,): 0.101}, noise=0.05))
    assert "cannot separate" in p.separation_note()


def test_energies_under_each_objective():
    p = Portfolio()
    p.add([0, 2], "x")
    p.add([1, 2], "y")
    Q = np.array([[1.0, 0, 0.5], [0, 2.0, 0], [0.5, 0, 3.0]])
    problem = BinaryQuadraticProblem(["a", "b", "c"], np.array([0.1, 0.2, 0.3]), Q)
    p.score("toy", problem)
    assert p.candidates[0].energies["toy"] == pytest.approx(0.1 + 0.3 + 1 + 3 + 2 * 0.5)
    assert p.candidates[1].energies["toy"] == pytest.approx(0.2 + 0.3 + 2 + 3)


def test_nothing_runnable_is_one_sentence():
    p = Portfolio()
    p.add([0], "a").error = "no"
    with pytest.raises(LmshrinkError, match="No candidate"):
        p.validate(FakeMeter({}))
