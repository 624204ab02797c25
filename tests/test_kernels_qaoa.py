"""Subspace QAOA: the same state as qiskit's circuit, INTERP, and amplification on a small problem."""

import math

import numpy as np
import pytest
from problems import fisher_problem, random_problem

pytest.importorskip("numba")
pytest.importorskip("scipy")
from lmshrink.core import LmshrinkError  # noqa: E402
from lmshrink.solvers.kernels.qaoa_subspace import interp, objective, optimize, ramp, subspace_problem  # noqa: E402


@pytest.mark.parametrize("mixer", ["ring", "complete"])
def test_probabilities_equal_qiskit_statevector_of_the_qaoa_circuit(mixer):
    pytest.importorskip("qiskit")
    from qiskit import transpile
    from qiskit.circuit.library import QAOAAnsatz
    from qiskit.quantum_info import Statevector

    from lmshrink.solvers.qaoa import cost_operator, xy_circuits

    p = random_problem([(5, 2), (4, 2)], free=2, seed=0)
    op, scale = cost_operator(p, None)
    init, mix = xy_circuits(p, mixer)
    params = np.array([0.3, -0.7, 0.5, 1.1])  # [β1, β2, γ1, γ2], QAOAAnsatz's parameter order
    circuit = QAOAAnsatz(op, reps=2, initial_state=init, mixer_operator=mix).assign_parameters(params)
    circuit = transpile(circuit, basis_gates=["rz", "sx", "x", "cx", "ry", "rx", "h"], optimization_level=0)
    full = Statevector(circuit).probabilities()
    sim = subspace_problem(p, mixer=mixer, scale=scale)
    assert sim.dim == math.comb(5, 2) * math.comb(4, 2) * 4
    assert full[sim.codes].sum() == pytest.approx(1.0, abs=1e-9)  # the circuit stays in the feasible subspace
    np.testing.assert_allclose(sim.probabilities(params), full[sim.codes], rtol=0, atol=1e-10)
    assert sim.expectation(params) == pytest.approx(full[sim.codes] @ sim.energies, abs=1e-8)


def test_basis_energies_and_uniform_start():
    p = random_problem([(6, 2)], free=1, seed=1)
    sim = subspace_problem(p)
    np.testing.assert_allclose(sim.energies, p.energies(sim.states()), atol=1e-12)
    assert all(p.is_feasible(x) for x in sim.states())
    np.testing.assert_allclose(sim.probabilities(np.zeros(2)), 1 / sim.dim)


def test_exact_mixer_equals_trotter_for_a_single_hop_and_is_unitary():
    p = random_problem([(2, 1)], seed=0)  # one pair: the product of hops is the exact exponential
    a, b = subspace_problem(p), subspace_problem(p, trotter=False)
    np.testing.assert_allclose(a.statevector([0.4, 0.9]), b.statevector([0.4, 0.9]), atol=1e-12)
    big = subspace_problem(random_problem([(6, 3)], free=1, seed=2), trotter=False)
    assert np.linalg.norm(big.statevector([0.3, 0.2, 0.5, 0.7])) == pytest.approx(1.0, abs=1e-10)


def test_interp_and_ramp():
    np.testing.assert_allclose(interp(np.array([0.5, 1.0])), [0.5, 0.5, 1.0, 1.0])  # p = 1 → 2 repeats the angle
    got = interp(np.array([-1.0, -0.5, 0.2, 0.6]))
    np.testing.assert_allclose(got, [-1.0, -0.75, -0.5, 0.2, 0.4, 0.6])
    np.testing.assert_allclose(ramp(2, 1.0), [-0.75, -0.25, 0.25, 0.75])


def test_optimize_amplifies_the_optimum_over_uniform():
    p = fisher_problem(10, 3, seed=4)
    sim = subspace_problem(p)
    out = optimize(sim, p_max=2, maxiter=60, shots=256, seed=0)
    assert out["uniform"] == pytest.approx(1 / math.comb(10, 3))
    assert out["p_optimal_over_uniform"] > 3
    assert out["depths"][1]["expectation"] <= out["depths"][0]["expectation"] + 1e-9
    assert out["best_sampled"]["energy"] >= out["optimum"] - 1e-12


def test_objectives_by_hand():
    p = random_problem([(4, 2)], seed=3)  # 6 feasible states
    sim = subspace_problem(p)
    x = np.array([0.3, 0.8])
    probs, h = sim.probabilities(x), sim.h
    assert objective(sim)(x) == pytest.approx(probs @ h)
    # CVaR_α: the lowest α of the mass, state by state from the lowest h
    order = np.argsort(h)
    alpha, left, total = 0.3, 0.3, 0.0
    for i in order:
        take = min(probs[i], left)
        total += take * h[i]
        left -= take
    assert objective(sim, cvar_alpha=alpha)(x) == pytest.approx(total / alpha)
    assert objective(sim, gibbs_eta=2.0)(x) == pytest.approx(-np.log(probs @ np.exp(-2.0 * (h - h.min()))))
    with pytest.raises(LmshrinkError, match="cvar_alpha"):
        objective(sim, cvar_alpha=1.5)
