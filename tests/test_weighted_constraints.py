"""Weighted constraints (L ≤ Σ w·x ≤ U) and budgets in parameters, checked against brute force."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from lmshrink.baselines import greedy_order
from lmshrink.core import BinaryQuadraticProblem, Block, Constraint, LmshrinkError, load_problem
from lmshrink.core.problem import band_reachable, subset_counts
from lmshrink.core.removal import ParameterBudget, parse_remove, removal_constraints
from lmshrink.solvers.fermigrad import FermiGradSolver

ATTN, MLP = 884_736, 2_654_208  # an attention and an MLP sub-layer of SmolLM2-135M


def _brute_sums(w):
    return [float(np.dot(w, x)) for x in itertools.product((0, 1), repeat=len(w))]


@pytest.mark.parametrize("seed", range(6))
def test_subset_counts_and_reachability_equal_brute_force(seed):
    rng = np.random.default_rng(seed)
    w = rng.integers(1, 9, size=9) * 3
    sums = np.array(_brute_sums(w))
    for lo, hi in [(10, 20), (0, 0), (50, 50), (None, 14), (40, None), (1, 2)]:
        inside = np.ones(len(sums), bool)
        if lo is not None:
            inside &= sums >= lo
        if hi is not None:
            inside &= sums <= hi
        assert subset_counts(w, lo, hi) == int(inside.sum())
        assert band_reachable(w, lo, hi) == bool(inside.any())


def test_weighted_constraint_fields_and_file_round_trip(tmp_path):
    c = Constraint([0, 1, 2, 3], weights=[ATTN, MLP, ATTN, MLP], lower=3_000_000, upper=3_000_000 + ATTN, name="b")
    assert c.kind == "weighted" and c.equals is None
    p = BinaryQuadraticProblem(list("abcd"), np.zeros(4), np.eye(4), constraints=[c])
    # sums in [3.0 M, 3.88 M]: one attention + one MLP, 2 × 2 ways
    assert p.num_feasible_states() == 4
    assert p.is_feasible([1, 1, 0, 0]) and not p.is_feasible([0, 1, 0, 0]) and not p.is_feasible([1, 1, 1, 1])
    assert p.violations([0, 1, 0, 0]) == [pytest.approx(MLP - 3_000_000)]
    path = p.save(tmp_path / "p.json")
    data = json.loads(path.read_text())
    assert data["format"] == "lmshrink.binary_quadratic/2"
    assert data["constraints"][0] == {"indices": [0, 1, 2, 3], "weights": [ATTN, MLP, ATTN, MLP],
                                      "lower": 3_000_000, "upper": 3_000_000 + ATTN, "name": "b"}
    back = load_problem(path)
    assert back.constraints == p.constraints
    # a problem with cardinalities only keeps the old format, byte for byte in its constraint entries
    q = BinaryQuadraticProblem(list("abcd"), np.zeros(4), np.eye(4), constraints=[Constraint([0, 1, 2, 3], 2)])
    assert q.to_dict()["format"] == "lmshrink.binary_quadratic/1"
    assert json.loads(q.save(tmp_path / "q.json").read_text())["constraints"] == [{"indices": [0, 1, 2, 3],
                                                                                   "equals": 2}]
    # unit weights with equal integral bounds are a cardinality, however written
    assert Constraint([0, 1, 2], lower=2, upper=2).equals == 2


@pytest.mark.parametrize("bad, says", [
    ({"indices": [0, 1], "weights": [1.0], "lower": 1}, "1 weights for 2 indices"),
    ({"indices": [0, 1], "weights": [2, 4], "lower": 3, "upper": 3}, "no choice of its 2 variables"),
    ({"indices": [0, 1], "weights": [2, 4], "lower": 5, "upper": 1}, "lower 5 above upper 1"),
    ({"indices": [0, 1], "weights": [2, 4]}, "neither 'lower' nor 'upper'"),
    ({"indices": [0, 1], "weights": [2, 4], "lower": 2, "bound": 3}, "unknown key 'bound'"),
])
def test_bad_weighted_constraints_in_a_file_get_one_sentence(tmp_path, bad, says):
    data = {"format": "lmshrink.binary_quadratic/2", "variables": ["a", "b"], "linear": [0, 0],
            "quadratic": [[0, 0], [0, 0]], "constraints": [bad]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LmshrinkError, match=says):
        load_problem(path)


def test_parse_remove_reads_counts_shares_and_parameters():
    assert parse_remove("6") == {None: 6}
    assert parse_remove("25%") == {None: ParameterBudget(fraction=0.25)}
    assert parse_remove("12.5%") == {None: ParameterBudget(fraction=0.125)}
    assert parse_remove("30M") == {None: ParameterBudget(parameters=30_000_000)}
    assert parse_remove("1.5k") == {None: ParameterBudget(parameters=1500)}
    assert parse_remove("attention=50%,mlp=2") == {"attention": ParameterBudget(fraction=0.5), "mlp": 2}
    for bad, says in [("0%", "strictly between 0 and 100"), ("100%", "strictly between 0 and 100"),
                      ("150%", "strictly between"), ("2.5", "whole number"), ("six", "expected a count")]:
        with pytest.raises(LmshrinkError, match=says):
            parse_remove(bad)


def _sublayer_blocks(layers: int) -> tuple[list[Block], list[int]]:
    blocks, weights = [], []
    for i in range(2 * layers):
        attn = i % 2 == 0
        blocks.append(Block(i, f"model.layers.{i // 2}.{'self_attn' if attn else 'mlp'}",
                            "attention" if attn else "mlp", i // 2))
        weights.append(ATTN if attn else MLP)
    return blocks, weights


def test_budget_constraint_is_the_band_and_bad_budgets_are_refused():
    blocks, w = _sublayer_blocks(30)
    decoder = 30 * (ATTN + MLP) + 30 * 2 * 576  # the norms no unit holds
    (c,) = removal_constraints(blocks, parse_remove("25%"), parameters=w, decoder=decoder)
    target = 0.25 * decoder
    assert c.lower == np.ceil(target) and c.upper == c.lower + ATTN
    assert c.weights == tuple(float(x) for x in w)
    with pytest.raises(LmshrinkError, match="less than the smallest removable unit"):
        removal_constraints(blocks, parse_remove("0.1%"), parameters=w, decoder=decoder)
    with pytest.raises(LmshrinkError, match="ask for at most"):
        removal_constraints(blocks, parse_remove("99.9%"), parameters=w, decoder=decoder)
    with pytest.raises(LmshrinkError, match="needs the parameter counts"):
        removal_constraints(blocks, parse_remove("25%"))
    # per kind: a share of that kind's own parameters
    cons = removal_constraints(blocks, parse_remove("attention=50%,mlp=3"), parameters=w, decoder=decoder)
    assert cons[0].lower == 15 * ATTN and cons[1].equals == 3


def test_greedy_order_fills_a_budget_band_with_the_lowest_scores():
    blocks, w = _sublayer_blocks(4)
    (c,) = removal_constraints(blocks, parse_remove("40%"), parameters=w)
    scores = {0: 0.5, 1: 0.1, 2: 0.2, 3: 0.9, 4: 0.3, 5: 0.8, 6: 0.05, 7: 0.7}
    order, trace = greedy_order([c], lambda removed, allowed: {i: scores[i] for i in allowed})
    chosen = np.zeros(8)
    chosen[order] = 1
    assert c.satisfied(chosen[None, :])[0]
    # by hand: the band is [5.66 M, 6.55 M] (40% of 14.16 M, plus one attention); lowest scores first: 6, 1, 2, 4
    # reach 5.31 M; of the rest only an attention fits under 6.55 M, and 0 is the lowest-scored one left
    assert order == [6, 1, 2, 4, 0]


def test_a_solver_without_weighted_support_says_so():
    c = Constraint([0, 1, 2], weights=[1, 2, 3], lower=3, upper=4)
    p = BinaryQuadraticProblem(list("abc"), np.zeros(3), np.eye(3), constraints=[c])
    with pytest.raises(LmshrinkError, match="does not honour weighted constraints"):
        FermiGradSolver().solve(p)  # tabu honours bands now (slack-penalty form)
