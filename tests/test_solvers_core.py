import numpy as np
import pytest

from lmshrink.core import LmshrinkError, ProblemTooLargeError
from lmshrink.plugins import get_solver
from test_problem import all_states, random_problem

CASES = [
    dict(n=10, m=3, seed=1),
    dict(n=12, m=5, seed=2),
    dict(n=11, seed=3, groups=[(range(4), 1), (range(4, 9), 2)]),  # two groups, two free variables
    dict(n=9, seed=4, groups=[(range(9), 0)]),
]


def brute_force(p, k):
    X = all_states(p.num_variables)
    feas = X[[p.is_feasible(x) for x in X]]
    E = p.energies(feas)
    order = np.argsort(E)[:k]
    return feas[order], E[order]


@pytest.mark.parametrize("case", CASES)
def test_exact_equals_brute_force(case):
    p = random_problem(**case)
    X, E = brute_force(p, 5)
    result = get_solver("exact").solve(p, num_solutions=5)
    np.testing.assert_allclose(result.energies, E, rtol=1e-12)
    assert [s.x for s in result] == [tuple(x) for x in X]


@pytest.mark.parametrize("case", CASES)
def test_anneal_finds_the_optimum_and_reproduces(case):
    p = random_problem(**case)
    _, E = brute_force(p, 3)
    a = get_solver("anneal").solve(p, num_solutions=3, seed=7, num_sweeps=300)
    b = get_solver("anneal").solve(p, num_solutions=3, seed=7, num_sweeps=300)
    assert a.best.energy == pytest.approx(E[0])
    assert [s.x for s in a] == [s.x for s in b]
    assert all(p.is_feasible(s.x) for s in a)


def test_anneal_keeps_magnetization_fixed_by_swaps():
    p = random_problem(n=40, m=7, seed=5)
    result = get_solver("anneal").solve(p, num_solutions=20, seed=0, num_sweeps=50, num_reads=8)
    assert result.info["num_infeasible"] == 0
    assert all(sum(s.x) == 7 for s in result)
    assert list(result.energies) == sorted(result.energies)
    assert len({s.x for s in result}) == len(result)


def test_exact_refuses_politely_past_its_size():
    p = random_problem(n=40, m=20, seed=0)
    with pytest.raises(ProblemTooLargeError, match="anneal"):
        get_solver("exact").solve(p)


def test_unknown_option_lists_valid_ones():
    p = random_problem()
    with pytest.raises(LmshrinkError, match=r"Did you mean 'num_reads'\?.*num_sweeps"):
        get_solver("anneal").solve(p, num_read=3)


def test_anneal_honours_a_time_limit_with_feasible_states():
    p = random_problem(n=120, m=10, seed=6)
    result = get_solver("anneal").solve(p, num_solutions=3, seed=0, time_limit=0.2, num_sweeps=10**6)
    assert result.info["stopped_early_at_sweep"] < 10**6
    assert all(p.is_feasible(s.x) for s in result)
