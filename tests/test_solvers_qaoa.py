"""``qaoa`` on its default backend, the subspace simulator: the state qiskit's circuit gives, amplification of the
optimum over the uniform baseline, and the options it refuses in one sentence."""

import math
import re

import numpy as np
import pytest
from problems import brute_force, fisher_problem, random_problem

from lmshrink.core import LmshrinkError
from lmshrink.plugins import get_solver

pytest.importorskip("numba")
pytest.importorskip("scipy")


def _feasible(p):
    n = p.num_variables
    X = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(np.int8)
    return X[[p.is_feasible(x) for x in X]]


def test_subspace_is_the_default_and_its_p_optimal_is_the_circuits():
    pytest.importorskip("qiskit")
    from qiskit import transpile
    from qiskit.circuit.library import QAOAAnsatz
    from qiskit.quantum_info import Statevector

    from lmshrink.solvers.qaoa import cost_operator, xy_circuits

    p = random_problem([(5, 2), (4, 1)], free=1, seed=3)
    result = get_solver("qaoa", p).solve(p, num_solutions=3, seed=0, reps=2, maxiter=30)
    info = result.info
    assert info["backend"] == "subspace" and info["num_fixed"] == 0 and info["num_repaired"] == 0
    assert result.best.energy == pytest.approx(brute_force(p)[0])
    assert all(p.is_feasible(s.x) for s in result)
    # the same angles on qiskit's circuit: γ' = γ·s/σ (s the circuit's coefficient scale, σ the energies' spread)
    X = _feasible(p)
    E = p.energies(X)
    op, s = cost_operator(p, None)
    init, mix = xy_circuits(p, "ring")
    beta, gamma = np.split(np.array(info["optimal_parameters"]), 2)
    circuit = QAOAAnsatz(op, reps=2, initial_state=init, mixer_operator=mix).assign_parameters(
        np.concatenate([beta, gamma * s / E.std()]))
    probs = Statevector(transpile(circuit, basis_gates=["rz", "sx", "x", "cx", "ry", "rx", "h"],
                                  optimization_level=0)).probabilities()
    codes = X @ (1 << np.arange(p.num_variables))
    optimal = np.isclose(E, E.min(), atol=1e-9)
    assert info["p_optimal"] == pytest.approx(probs[codes[optimal]].sum(), abs=1e-9)
    assert info["uniform"] == pytest.approx(1 / len(X)) and len(X) == math.comb(5, 2) * math.comb(4, 1) * 2
    assert info["p_optimal_over_uniform"] == pytest.approx(info["p_optimal"] * len(X))
    # the samples carry their count and ideal probability
    assert sum(s.info["count"] for s in result) <= 1024 and all(0 < s.info["probability"] <= 1 for s in result)


def test_gibbs_and_cvar_objectives_amplify_the_optimum_at_p3():
    p = fisher_problem(12, 4, seed=1)  # dim C(12, 4) = 495
    solver = get_solver("qaoa", p)
    for kw in ({"gibbs_eta": 50.0}, {"cvar_alpha": 0.1}):
        info = solver.solve(p, seed=0, reps=3, **kw).info
        assert info["dim"] == 495 and info["objective"] in ("Gibbs", "CVaR")
        assert info["p_optimal_over_uniform"] >= 5, (kw, info["p_optimal_over_uniform"])
        assert [d["p"] for d in info["depths"]] == [1, 2, 3]  # ramp at p = 1, INTERP to 2 and 3
        assert info["best_sampled"]["optimal"]


def test_random_initial_angles_run_one_depth():
    p = fisher_problem(8, 3, seed=2)
    info = get_solver("qaoa", p).solve(p, seed=0, reps=2, init="random", maxiter=10).info
    assert info["init"] == "random" and [d["p"] for d in info["depths"]] == [2]


def test_statevector_backend_starts_from_the_subspace_angles():
    pytest.importorskip("qiskit_optimization")
    p = random_problem([(5, 2)], seed=9)
    result = get_solver("qaoa", p).solve(p, seed=0, backend="statevector", maxiter=10)
    assert result.info["initial_point"].startswith("subspace simulator's optimised angles")
    assert result.best.energy == pytest.approx(brute_force(p)[0])
    random = get_solver("qaoa", p).solve(p, seed=0, backend="statevector", maxiter=5, init="random")
    assert random.info["initial_point"] == "uniform random in [0.2, 0.6]"


@pytest.mark.parametrize("options, says", [
    ({"formulation": "penalty"}, "backend=subspace simulates the xy formulation only"),
    ({"backend": "statevector", "gibbs_eta": 5.0}, "gibbs_eta needs backend=subspace"),
    ({"gibbs_eta": 5.0, "cvar_alpha": 0.2}, "Give cvar_alpha or gibbs_eta, not both."),
])
def test_combinations_a_backend_cannot_run_are_one_sentence(options, says):
    p = random_problem([(5, 2)], seed=0)
    with pytest.raises(LmshrinkError) as err:
        get_solver("qaoa", p).solve(p, **options)
    assert str(err.value).startswith(says)
    assert not re.findall(r"[.!?](?=\s+[A-Z])", str(err.value))
