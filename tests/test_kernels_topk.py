"""The branch-and-bound top-k against brute force, and its certificate."""

import numpy as np
import pytest
from problems import brute_force, fisher_problem, random_problem

pytest.importorskip("numba")
from lmshrink.core import LmshrinkError  # noqa: E402
from lmshrink.solvers.kernels.layout import problem_layout  # noqa: E402
from lmshrink.solvers.kernels.topk import reformulate, root_bound, topk_bnb, topk_problem  # noqa: E402


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 10])
def test_proven_k_lowest_equal_brute_force(seed, k):
    p = random_problem([(6, 3), (5, 2), (2, 1)], free=3, seed=seed)
    _, energies = brute_force(p)
    res = topk_problem(p, k=k)
    assert res.info["proven"]
    np.testing.assert_allclose(res.energies, energies[:k], rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.energies, p.energies(res.states), rtol=0, atol=1e-12)
    assert all(p.is_feasible(x) for x in res.states)
    assert len(np.unique(res.states, axis=0)) == len(res.states)
    # the certificate: every pruned subtree's bound is at least the k-th energy (up to the tolerance)
    assert res.info["min_pruned_bound"] >= res.info["kth_energy"] - res.info["tolerance"]
    assert res.info["root_bound"] <= energies[0] + 1e-9


def test_fisher_like_top10_without_anneal_incumbents():
    p = fisher_problem(14, 5, seed=2)
    _, energies = brute_force(p)
    res = topk_problem(p, k=10, seed_reads=0)
    np.testing.assert_allclose(res.energies, energies[:10], rtol=0, atol=1e-9)


def test_fewer_feasible_states_than_k():
    p = random_problem([(4, 1)], free=1, seed=0)  # 4 · 2 = 8 feasible states
    res = topk_problem(p, k=10)
    assert len(res.states) == 8 and res.info["proven"]


def test_reformulation_keeps_feasible_energies_and_the_root_bound_is_valid():
    p = random_problem([(7, 3), (5, 2)], free=2, seed=1)
    lay = problem_layout(p)
    u = np.random.default_rng(0).normal(size=p.num_variables)
    a2, Q2 = reformulate(p.linear + np.diag(p.quadratic), p.quadratic, lay, u)
    lin2 = a2 - np.diag(Q2)
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = np.zeros(p.num_variables, dtype=int)
        for g in range(lay.num_groups):
            x[rng.choice(lay.group(g), lay.equals[g], replace=False)] = 1
        x[lay.free] = rng.integers(0, 2, len(lay.free))
        assert x @ lin2 + x @ Q2 @ x + p.offset == pytest.approx(p.energy(x))
    best, _ = brute_force(p)
    assert root_bound(p.linear + np.diag(p.quadratic), p.quadratic, lay, u)[0] + p.offset <= best + 1e-9


def test_time_limit_returns_unproven_best_found():
    p = fisher_problem(128, 16, seed=0)
    res = topk_problem(p, k=1, time_limit=0.5)
    assert not res.info["proven"]
    assert p.is_feasible(res.states[0])


def test_bad_input_is_one_clear_error():
    p = random_problem([(5, 2)], seed=0)
    with pytest.raises(LmshrinkError, match="k must be at least 1"):
        topk_bnb(p.linear, p.quadratic, [np.arange(5)], [2], k=0)
    with pytest.raises(LmshrinkError, match="overlaps"):
        topk_bnb(p.linear, p.quadratic, [np.arange(5), [0]], [2, 1])
