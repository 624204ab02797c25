"""Hard instance families: the planted optimum is the optimum, and greedy + swap descent misses it."""

import numpy as np
import pytest
from problems import brute_force

pytest.importorskip("numba")
from lmshrink.solvers.kernels.anneal_swap import greedy_descent  # noqa: E402
from lmshrink.solvers.kernels.instances import low_spread_problem, planted_problem  # noqa: E402
from lmshrink.solvers.kernels.layout import problem_layout  # noqa: E402


@pytest.mark.parametrize("kinds", [1, 2])
def test_planted_state_is_the_unique_optimum_at_zero(kinds):
    p = planted_problem(14, 6, seed=3, kinds=kinds)
    best, energies = brute_force(p)
    x = p.state(p.metadata["planted"])
    assert p.is_feasible(x)
    assert p.energy(x) == pytest.approx(0.0, abs=1e-9) and best == pytest.approx(0.0, abs=1e-9)
    assert energies[1] > 1e-6


def test_greedy_descent_misses_planted_optima():
    missed = 0
    for seed in range(5):
        p = planted_problem(48, 12, seed=seed)
        lay = problem_layout(p)
        _, e = greedy_descent(p.linear, p.quadratic, [lay.group(0)], lay.equals.tolist())
        missed += e + p.offset > 1e-9
    assert missed >= 4


def test_low_spread_problem_is_a_psd_fisher_like_problem():
    p = low_spread_problem(20, 5, seed=0, kinds=1)
    assert np.linalg.eigvalsh(p.quadratic).min() > -1e-10
    assert p.constraints[0].equals == 5
