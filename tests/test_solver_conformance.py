"""Every installed solver of binary problems, on the same seeded problems, against brute force.

Backends that need hardware run offline: ``dwave`` on dwave-system's MockDWaveSampler (real Pegasus graph),
``dwave-hybrid`` on a stand-in for LeapHybridCQMSampler built on dimod's ExactCQMSolver, ``qaoa`` on the exact
statevector sampler with at most 8 qubits (larger problems go through its classical reduction).
"""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

from lmshrink.core import BinaryQuadraticProblem, LmshrinkError, load_problem
from lmshrink.plugins import registry
from problems import brute_force, fisher_problem, random_problem

PROBLEMS = {
    "one-group": lambda: random_problem([(11, 4)], seed=11),
    "two-groups": lambda: random_problem([(6, 2), (6, 3)], seed=12),
    "groups+free": lambda: random_problem([(5, 2), (4, 1)], free=3, seed=13),
    "fisher": lambda: fisher_problem(12, 4, seed=14, kinds=2),
}

#: per backend: the python modules its extra provides, and options that keep the run offline and quick
BACKENDS: dict[str, dict] = {
    "dwave": {"needs": ["dimod", "dwave.system", "dwave.samplers", "minorminer"],
              "options": {"sampler": "mock-pegasus", "num_reads": 40, "mock_sweeps": 300}},
    "dwave-hybrid": {"needs": ["dimod", "dwave.system"], "options": {}},
    "qaoa": {"needs": ["qiskit", "qiskit_optimization"], "options": {"max_qubits": 8, "maxiter": 15, "shots": 512}},
    "milp": {"needs": ["pyomo.environ", "highspy"], "options": {}},
    "tabu": {"needs": ["dimod", "dwave.samplers"], "options": {}},
    "fermigrad": {"needs": ["torch"], "options": {"steps": 150}},
    "anneal": {"needs": [], "options": {"num_sweeps": 300}},
}


def binary_solvers() -> list[str]:
    return sorted(e.name for e in registry("solver") if BinaryQuadraticProblem in e.problem_types)


def _skip_without_extra(name: str) -> None:
    for module in BACKENDS.get(name, {}).get("needs", []):
        try:
            importlib.import_module(module)
        except ImportError:
            pytest.skip(f"{name}: optional module {module} is not installed")


class _FakeLeapHybridCQM:
    """Offline stand-in for LeapHybridCQMSampler: dimod's exact CQM solver, with Leap-like info."""

    def min_time_limit(self, cqm):
        return 5.0

    def sample_cqm(self, cqm, time_limit=None, label=None):
        import dimod

        sampleset = dimod.ExactCQMSolver().sample_cqm(cqm)
        sampleset.info.update({"run_time": 5_000_000, "qpu_access_time": 0, "problem_id": "offline"})
        return sampleset


@pytest.fixture
def solver_for(monkeypatch):
    """Build the named solver for a problem, with offline stand-ins where a backend needs the cloud."""

    def make(name: str, problem: BinaryQuadraticProblem):
        _skip_without_extra(name)
        solver = registry("solver").for_problem(name, problem)
        if name == "dwave-hybrid":
            monkeypatch.setattr(type(solver), "_sampler", staticmethod(lambda: _FakeLeapHybridCQM()))
        return solver, dict(BACKENDS.get(name, {}).get("options", {}))

    return make


def test_every_binary_backend_is_registered():
    names = set(binary_solvers())
    assert {"exact", "anneal", "milp", "dwave", "dwave-hybrid", "qaoa", "tabu", "fermigrad"} <= names


@pytest.mark.parametrize("problem_name", sorted(PROBLEMS))
@pytest.mark.parametrize("name", binary_solvers())
def test_backend_conformance(name, problem_name, solver_for, tmp_path):
    problem = PROBLEMS[problem_name]()
    solver, options = solver_for(name, problem)
    k = 5
    first = solver.solve(problem, num_solutions=k, seed=3, **options)
    again = solver.solve(problem, num_solutions=k, seed=3, **options)

    # feasible, distinct, sorted
    xs = [s.x for s in first]
    assert 1 <= len(xs) <= k
    assert all(problem.is_feasible(x) for x in xs)
    assert len(set(xs)) == len(xs)
    assert list(first.energies) == sorted(first.energies)

    # energies recomputed from the problem file equal the reported ones
    path = problem.save(tmp_path / "problem.json")
    loaded = load_problem(path)
    np.testing.assert_allclose(loaded.energies(np.array(xs)), first.energies, rtol=1e-10, atol=1e-10)

    # the best is the optimum over all 2^N vectors; exact backends prove the k lowest
    optimum, all_energies = brute_force(problem)
    assert first.best.energy == pytest.approx(optimum, rel=1e-9, abs=1e-9)
    if solver.exact:
        assert len(xs) == k
        np.testing.assert_allclose(first.energies, all_energies[:k], rtol=1e-9, atol=1e-9)
    else:
        assert len(xs) >= 3, f"{name} returned only {len(xs)} distinct states"

    # a seed reproduces the run
    assert [s.x for s in again] == xs

    # backend facts are plain JSON (reports and `lmshrink solve --json` write them)
    json.dumps(first.to_dict())


@pytest.mark.parametrize("name", binary_solvers())
def test_unknown_option_is_rejected_with_the_valid_ones(name, solver_for):
    problem = PROBLEMS["one-group"]()
    solver, _ = solver_for(name, problem)
    with pytest.raises(LmshrinkError) as err:
        solver.solve(problem, definitely_not_an_option=1)
    message = str(err.value)
    assert "definitely_not_an_option" in message
    assert "Valid options:" in message
    for option in solver.options:
        assert option in message
