"""The ``anneal`` solver on the compiled kernel, and its numpy path without numba."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from problems import brute_force, fisher_problem, random_problem

from lmshrink.plugins import get_solver, registry
from lmshrink.solvers import anneal as anneal_module
from lmshrink.testing import SolverConformance

pytest.importorskip("numba")


def _samples(problem, **options):
    """The solver's own Samples: rows 0..R−1 the lowest state each read visited, R..2R−1 the final states."""
    solver = get_solver("anneal")
    values = solver.validate(options)
    return solver.sample_with(problem, values, num_solutions=1, seed=0, time_limit=None), values["num_reads"]


@pytest.mark.parametrize("replicas", [1, 8])
def test_final_state_hit_rate_and_raw_summary_count_each_reads_final_state(replicas):
    p = random_problem([(8, 3), (5, 2)], free=3, seed=5)
    optimum, _ = brute_force(p)
    samples, reads = _samples(p, replicas=replicas, num_sweeps=300)
    final = samples.states[reads : 2 * reads]
    at_optimum = np.isclose(p.energies(final), optimum, atol=1e-9)
    assert samples.info["engine"] == "numba" and samples.info["replicas"] == replicas
    assert samples.info["final_hit_rate"] == pytest.approx(at_optimum.mean())
    assert samples.raw.num_samples == reads and samples.raw.best_energy == pytest.approx(optimum)
    result = get_solver("anneal").solve(p, seed=0, replicas=replicas, num_sweeps=300)
    assert result.best.energy == pytest.approx(optimum) and result.raw.num_samples == reads


def test_tempering_default_ends_every_read_at_the_optimum_of_a_small_problem():
    p = fisher_problem(20, 6, seed=3, kinds=2)
    optimum, _ = brute_force(p)
    result = get_solver("anneal").solve(p, seed=1, num_sweeps=300)
    assert result.info["final_hit_rate"] == 1.0 and result.best.energy == pytest.approx(optimum)


def test_beta_range_option_reaches_the_kernel():
    p = random_problem([(9, 4)], seed=2)
    result = get_solver("anneal").solve(p, seed=0, num_sweeps=50, beta_range=(0.5, 40.0))
    assert result.info["beta_range"] == [0.5, 40.0]


def test_a_huge_sweep_budget_with_a_time_limit_stops_at_the_limit_in_either_schedule():
    p = fisher_problem(60, 15, seed=1)
    for replicas in (1, 8):
        result = get_solver("anneal").solve(p, seed=0, time_limit=0.3, num_sweeps=10**12, replicas=replicas)
        assert result.stopped_early and 0 < result.info["sweeps_done"] < 10**12
        assert result.info["quench_complete"] and all(p.is_feasible(s.x) for s in result)


def test_numpy_path_without_the_kernel(monkeypatch):
    monkeypatch.setattr(anneal_module, "compiled_kernel", lambda: None)
    p = random_problem([(7, 3), (5, 2)], free=2, seed=4)
    optimum, energies = brute_force(p)
    result = get_solver("anneal").solve(p, num_solutions=3, seed=0, num_sweeps=300)
    again = get_solver("anneal").solve(p, num_solutions=3, seed=0, num_sweeps=300)
    assert result.info["engine"] == "numpy" and "pip install 'lmshrink[fast]'" in result.info["note"]
    np.testing.assert_allclose(result.energies, energies[:3], atol=1e-9)
    assert [s.x for s in again] == [s.x for s in result]
    assert 0 < result.info["final_hit_rate"] <= 1 and result.raw.num_samples == 32


def test_without_numba_the_default_solvers_still_run():
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "from lmshrink.plugins import get_solver\n"
        "from lmshrink.testing import fisher_problem\n"
        "p = fisher_problem(12, 4, seed=1)\n"
        "a = get_solver('anneal').solve(p, seed=0, num_sweeps=200)\n"
        "e = get_solver('exact').solve(p, num_solutions=3)\n"
        "print(a.info['engine'], e.info['method'], abs(a.best.energy - e.best.energy) < 1e-9, e.proven_optimal)\n"
        "try:\n    get_solver('exact').solve(p, method='branch-and-bound')\n"
        "except Exception as err:\n    print(type(err).__name__, err)\n"
    )
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=str(Path(__file__).parents[1])).stdout.splitlines()
    assert lines[0] == "numpy enumerate True True"
    assert lines[1].startswith("MissingDependencyError") and "pip install 'lmshrink[fast]'" in lines[1]


class TestConformance_anneal_numpy(SolverConformance):
    """``anneal`` without numba: its numpy path passes the same suite."""

    solver = registry("solver").entry("anneal").create()
    expect_optimum = True
    min_distinct = 3

    @pytest.fixture(autouse=True)
    def _no_kernel(self, monkeypatch):
        from lmshrink.solvers import anneal

        monkeypatch.setattr(anneal, "compiled_kernel", lambda: None)
