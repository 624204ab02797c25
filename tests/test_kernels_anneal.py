"""The compiled swap annealer: incremental energies, feasibility, determinism, optimum on small problems."""

import numpy as np
import pytest
from problems import brute_force, fisher_problem, random_problem

pytest.importorskip("numba")
from lmshrink.core import LmshrinkError  # noqa: E402
from lmshrink.solvers.kernels.anneal_swap import anneal_problem, anneal_swap, greedy_descent  # noqa: E402
from lmshrink.solvers.kernels.layout import problem_layout  # noqa: E402


def _groups(problem):
    lay = problem_layout(problem)
    return [lay.group(g) for g in range(lay.num_groups)], lay.equals.tolist()


@pytest.mark.parametrize("seed, replicas", [(0, 1), (1, 1), (2, 4)])
def test_energies_tracked_incrementally_equal_recomputed_and_states_are_feasible(seed, replicas):
    p = random_problem([(7, 3), (6, 2), (3, 3)], free=4, seed=seed)
    res = anneal_problem(p, num_reads=16, num_sweeps=150, replicas=replicas, seed=seed)
    for states, energies in ((res.final_states, res.final_energies), (res.best_states, res.best_energies)):
        assert all(p.is_feasible(x) for x in states)
        np.testing.assert_allclose(energies, p.energies(states), rtol=0, atol=1e-9)
    assert (res.best_energies <= res.final_energies + 1e-12).all()
    assert res.info["sweeps_done"] == 150


def test_final_states_reach_the_brute_force_optimum():
    p = random_problem([(8, 3), (5, 2)], free=3, seed=5)
    best, _ = brute_force(p)
    res = anneal_problem(p, num_reads=32, num_sweeps=300, replicas=1, seed=0)
    assert res.final_energies.min() == pytest.approx(best, abs=1e-9)
    assert np.isclose(res.best_energies, best, atol=1e-9).all()
    # the first excited state lies only 0.063 above the optimum, behind a barrier: annealed reads freeze into
    # either, the optimum more often; parallel tempering keeps exchanging them until the cold replica sits in
    # the optimum
    assert np.mean(np.isclose(res.final_energies, best, atol=1e-9)) >= 0.4
    pt = anneal_problem(p, num_reads=32, num_sweeps=300, replicas=8, seed=0)
    assert np.mean(np.isclose(pt.final_energies, best, atol=1e-9)) >= 0.8  # β_cold leaves the 0.063 gap e^{2} odds
    assert 0 < pt.info["exchange_rate"] < 1


def test_final_states_are_one_swap_local_minima():
    p = fisher_problem(24, 6, seed=3)
    res = anneal_problem(p, num_reads=8, num_sweeps=5, replicas=1, seed=1)  # too short: the quench does the work
    for x, e in zip(res.final_states, res.final_energies):
        on, off = np.flatnonzero(x), np.flatnonzero(x == 0)
        for i in on:
            for j in off:
                y = x.copy()
                y[i], y[j] = 0, 1
                assert p.energy(y) >= e - 1e-9


def test_same_seed_same_output_other_seed_other_path():
    p = random_problem([(10, 4)], free=2, seed=2)
    a = anneal_problem(p, num_reads=8, num_sweeps=50, replicas=3, seed=7)
    b = anneal_problem(p, num_reads=8, num_sweeps=50, replicas=3, seed=7)
    c = anneal_problem(p, num_reads=8, num_sweeps=50, replicas=3, seed=8)
    np.testing.assert_array_equal(a.final_states, b.final_states)
    np.testing.assert_array_equal(a.best_energies, b.best_energies)
    assert a.info["beta_range"] == b.info["beta_range"]
    assert not np.array_equal(a.final_states, c.final_states) or a.info["beta_range"] != c.info["beta_range"]


def test_schedule_ends_cold_and_the_quench_only_finishes():
    p = fisher_problem(40, 10, seed=1)
    res = anneal_problem(p, num_reads=4, num_sweeps=100, replicas=1, seed=0)
    hot, cold = res.info["beta_range"]
    # β_cold accepts the smallest uphill move out of a local minimum with probability 1e-3
    assert np.exp(-cold * res.info["smallest_uphill"]) == pytest.approx(1e-3, rel=1e-6)
    assert cold > hot


def test_groups_with_nothing_to_choose_and_only_free_variables():
    p = random_problem([(4, 0), (3, 3)], free=3, seed=4)
    best, _ = brute_force(p)
    res = anneal_problem(p, num_reads=4, num_sweeps=50, seed=0)
    assert res.final_energies.min() == pytest.approx(best, abs=1e-9)
    fixed = random_problem([(4, 4)], seed=1)
    out = anneal_problem(fixed, num_reads=2, num_sweeps=10, seed=0)
    assert out.final_states.sum(axis=1).tolist() == [4, 4]
    assert out.info["note"] == "every variable is fixed by the constraints"


def test_time_limit_cuts_the_schedule_but_quenches():
    p = fisher_problem(64, 16, seed=0)
    res = anneal_problem(p, num_reads=4, num_sweeps=10_000_000, seed=0, time_limit=0.3)
    assert res.info.get("stopped_early") and res.info["sweeps_done"] < 10_000_000
    assert all(p.is_feasible(x) for x in res.final_states)


def test_greedy_descent_is_a_feasible_local_minimum():
    p = random_problem([(9, 4)], free=2, seed=3)
    groups, equals = _groups(p)
    x, e = greedy_descent(p.linear, p.quadratic, groups, equals)
    assert p.is_feasible(x)
    assert e + p.offset == pytest.approx(p.energy(x))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"num_reads": 0}, "num_reads"), ({"replicas": 0}, "replicas"), ({"time_limit": 0}, "time_limit"),
     ({"beta_hot": -1.0}, "beta_hot")],
)
def test_bad_input_is_one_clear_error(kwargs, match):
    p = random_problem([(5, 2)], seed=0)
    groups, equals = _groups(p)
    with pytest.raises(LmshrinkError, match=match):
        anneal_swap(p.linear, p.quadratic, groups, equals, **kwargs)
    with pytest.raises(LmshrinkError, match="asks for 6 ones"):
        anneal_swap(p.linear, p.quadratic, groups, [6])
    with pytest.raises(LmshrinkError, match="symmetric"):
        anneal_swap(p.linear, p.quadratic + np.triu(np.ones((5, 5)), 1), groups, equals)


def test_without_numba_one_sentence_names_the_extra():
    import subprocess
    import sys

    code = ("import sys; sys.modules['numba'] = None\n"
            "try:\n    import lmshrink.solvers.kernels.topk\nexcept Exception as e:\n    print(type(e).__name__, e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out.startswith("MissingDependencyError") and "pip install 'lmshrink[fast]'" in out
