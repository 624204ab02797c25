import numpy as np
import pytest

from lmshrink.core import LmshrinkError, ProblemTooLargeError
from lmshrink.plugins import get_solver
from problems import fisher_problem
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


def _one_swap_neighbours(p, x):
    """Every feasible one-swap neighbour of x, written out (the independent check of the streamed enumeration)."""
    out = []
    for c in p.constraints:
        on = [i for i in c.indices if x[i]]
        off = [j for j in c.indices if not x[j]]
        for i in on:
            for j in off:
                y = x.copy()
                y[i], y[j] = 0, 1
                out.append(y)
    for k in p.free_indices:
        y = x.copy()
        y[k] ^= 1
        out.append(y)
    return np.array(out)


def test_streamed_neighbours_are_the_lowest_new_one_swap_neighbours():
    from lmshrink.solvers.anneal import swap_neighbours

    p = random_problem(n=14, seed=8, groups=[(range(7), 3), (range(7, 12), 2)])
    rng = np.random.default_rng(0)
    X = np.array([p.state(list(rng.choice(7, 3, replace=False)) + list(7 + rng.choice(5, 2, replace=False))
                          + list(rng.choice([12, 13], rng.integers(0, 3), replace=False))) for _ in range(6)])
    for k in (1, 3, 8):
        got = swap_neighbours(p, X, k)
        seeds = np.unique(X, axis=0)
        seeds = seeds[np.argsort(p.energies(seeds), kind="stable")[:k]]
        every = np.unique(np.concatenate([_one_swap_neighbours(p, s) for s in seeds]), axis=0)
        known = {x.tobytes() for x in X.astype(np.int8)}
        new = np.array([y for y in every.astype(np.int8) if y.tobytes() not in known])
        expected = np.sort(p.energies(new))[:k]
        np.testing.assert_allclose(np.sort(p.energies(got)), expected, rtol=1e-12)
        assert len({y.tobytes() for y in got}) == len(got) and not {y.tobytes() for y in got} & known


def test_anneal_on_n2000_keeps_memory_bounded_and_stops_cold_at_its_time_limit():
    import tracemalloc

    p = fisher_problem(2000, 100, seed=0, samples=64)
    tracemalloc.start()
    try:
        result = get_solver("anneal").solve(p, num_solutions=5, seed=0, time_limit=0.5, num_sweeps=10**6)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 300 * 2**20, f"anneal allocated {peak / 2**20:.0f} MiB"
    assert result.stopped_early and result.info["stopped_early_at_sweep"] < 10**6
    assert len(result) == 5 and all(p.is_feasible(s.x) for s in result)
    assert result.info["quench_improved"] > 0  # the stopped reads did not stay hot


def test_anneal_stopped_early_quenches_to_a_one_swap_minimum():
    p = fisher_problem(80, 8, seed=2)
    result = get_solver("anneal").solve(p, num_solutions=3, seed=0, time_limit=0.05, num_sweeps=10**6)
    assert result.stopped_early and result.info["quench_complete"]
    best = np.array(result.best.x)
    assert p.energies(_one_swap_neighbours(p, best)).min() >= result.best.energy - 1e-12
