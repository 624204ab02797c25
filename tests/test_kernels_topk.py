"""The branch-and-bound top-k against brute force, and its certificate."""

import numpy as np
import pytest
from problems import brute_force, fisher_problem, random_problem

pytest.importorskip("numba")
from lmshrink.core import LmshrinkError  # noqa: E402
from lmshrink.solvers.kernels.layout import problem_layout  # noqa: E402
from lmshrink.solvers.kernels.topk import (  # noqa: E402
    convex_root_bound,
    convex_shift,
    reformulate,
    root_bound,
    topk_bnb,
    topk_problem,
)


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
    # N = 160, M = 32: not proven in 120 s (N = 128, M = 16 is now proven in about a second, see below)
    p = fisher_problem(160, 32, seed=0)
    res = topk_problem(p, k=1, time_limit=0.5)
    assert not res.info["proven"]
    assert p.is_feasible(res.states[0])
    # the reported bound is the best known at the root: at least the convex relaxation and 0 (Q is PSD)
    assert res.info["root_bound"] >= max(res.info["root_bound_convex"], res.info["root_bound_shifted"], 0.0)
    assert res.info["root_bound"] <= res.energies[0]


def test_a_capped_multiplier_search_leaves_time_to_prove_a_fisher_problem():
    """The multiplier search gets at most a quarter of the limit; it used to take all of it at N = 128, M = 16."""
    p = fisher_problem(128, 16, seed=0)
    res = topk_problem(p, k=1, time_limit=20)
    assert res.info["proven"] and res.info["nodes"] > 0


def test_bad_input_is_one_clear_error():
    p = random_problem([(5, 2)], seed=0)
    with pytest.raises(LmshrinkError, match="k must be at least 1"):
        topk_bnb(p.linear, p.quadratic, [np.arange(5)], [2], k=0)
    with pytest.raises(LmshrinkError, match="overlaps"):
        topk_bnb(p.linear, p.quadratic, [np.arange(5), [0]], [2, 1])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("convex", [True, False])
def test_with_and_without_the_convex_bound_the_k_lowest_equal_brute_force(seed, convex):
    p = (random_problem([(7, 3), (6, 2)], free=2, seed=seed) if seed % 2 else
         fisher_problem(16, 6, seed=seed, kinds=1 + seed % 3, shared=0.5 * (seed % 4)))
    _, energies = brute_force(p)
    res = topk_problem(p, k=5, convex=convex)
    assert res.info["proven"] and res.info["convex_bound"] == convex
    np.testing.assert_allclose(res.energies, energies[:5], rtol=0, atol=1e-9)
    assert res.info["min_pruned_bound"] >= res.info["kth_energy"] - res.info["tolerance"]


@pytest.mark.parametrize("seed", range(3))
def test_convex_shift_keeps_q_semidefinite_and_the_root_bound_is_valid(seed):
    for p in (fisher_problem(20, 5, seed=seed), random_problem([(8, 3), (7, 2)], free=2, seed=seed)):
        d = convex_shift(p.quadratic)
        assert np.linalg.eigvalsh(p.quadratic - np.diag(d))[0] >= -1e-12 * np.abs(p.quadratic).max()
        lay = problem_layout(p)
        optimum, _ = brute_force(p)
        assert convex_root_bound(p.linear, p.quadratic, lay, d) + p.offset <= optimum + 1e-9
    # on a Fisher matrix the shift follows the block scales and lifts the root bound far above the Lagrangian one
    p = fisher_problem(20, 5, seed=seed)
    lay = problem_layout(p)
    lagrangian = root_bound(p.linear + np.diag(p.quadratic), p.quadratic, lay, np.zeros(20))[0]
    assert convex_root_bound(p.linear, p.quadratic, lay, convex_shift(p.quadratic)) > lagrangian


def test_the_convex_bound_prunes_most_of_a_fisher_search():
    p = fisher_problem(48, 12, seed=0)
    with_cvx, without = topk_problem(p, k=1, convex=True), topk_problem(p, k=1, convex=False)
    assert with_cvx.info["proven"] and without.info["proven"]
    np.testing.assert_allclose(with_cvx.energies, without.energies, rtol=0, atol=1e-12)
    assert with_cvx.info["nodes"] * 5 < without.info["nodes"] and with_cvx.info["pruned_by_convex_bound"] > 0
    assert topk_problem(p, k=1).info["convex_bound"]  # chosen by default: its root bound is the better one
