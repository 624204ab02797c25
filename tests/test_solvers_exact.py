"""The ``exact`` solver: branch and bound where it wins, enumeration on small problems, both proving the k lowest."""

import numpy as np
import pytest
from problems import brute_force, fisher_problem, random_problem

from lmshrink.plugins import get_solver
from lmshrink.solvers.exact import ENUMERATE_UP_TO

pytest.importorskip("numba")


def test_auto_enumerates_small_problems_and_branches_on_larger_ones():
    small = random_problem([(11, 4)], seed=11)
    assert small.num_feasible_states() <= ENUMERATE_UP_TO
    assert get_solver("exact").solve(small).info["method"] == "enumerate"
    large = fisher_problem(24, 6, seed=2)  # 134,596 feasible states
    assert large.num_feasible_states() > ENUMERATE_UP_TO
    assert get_solver("exact").solve(large).info["method"] == "branch-and-bound"


def test_branch_and_bound_top10_equals_enumeration_with_a_certificate():
    p = fisher_problem(24, 6, seed=2, spread=0.3)
    bnb = get_solver("exact").solve(p, num_solutions=10, method="branch-and-bound")
    enum = get_solver("exact").solve(p, num_solutions=10, method="enumerate")
    assert bnb.proven_optimal and enum.proven_optimal and not bnb.stopped_early
    np.testing.assert_allclose(bnb.energies, enum.energies, rtol=0, atol=1e-9)
    cert = bnb.info["certificate"]
    assert cert["min_pruned_bound"] >= cert["kth_energy"] - cert["tolerance"]
    assert cert["kth_energy"] == pytest.approx(enum.energies[-1]) and cert["root_bound"] <= enum.energies[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_branch_and_bound_with_groups_and_free_variables_equals_brute_force(seed):
    p = random_problem([(6, 3), (5, 2), (2, 1)], free=3, seed=seed)
    _, energies = brute_force(p)
    result = get_solver("exact").solve(p, num_solutions=5, method="branch-and-bound")
    assert result.proven_optimal
    np.testing.assert_allclose(result.energies, energies[:5], rtol=0, atol=1e-9)


def test_a_time_limit_stops_branch_and_bound_with_a_valid_lower_bound():
    p = fisher_problem(160, 32, seed=0)  # not proven in 120 s (N = 128, M = 16 now proves in about a second)
    result = get_solver("exact").solve(p, time_limit=0.3)
    assert result.stopped_early and not result.proven_optimal
    info = result.info
    assert info["lower_bound"] <= result.best.energy and info["gap"] >= 0
    assert p.is_feasible(result.best.x)


def test_max_states_applies_only_to_enumeration():
    p = fisher_problem(24, 6, seed=2)
    assert get_solver("exact").solve(p, max_states=1000).proven_optimal  # branch and bound: no refusal
