import itertools

import numpy as np
import pytest

from lmshrink.core import BinaryQuadraticProblem, Constraint, LmshrinkError, load_problem


def random_problem(n=8, m=3, seed=0, groups=None):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(2 * n, n)) * rng.uniform(0.3, 2.0, size=n)
    cons = [Constraint(g, k) for g, k in groups] if groups else [Constraint(range(n), m)]
    return BinaryQuadraticProblem([f"b{i}" for i in range(n)], rng.normal(size=n), A.T @ A / (2 * n), 0.7, cons)


def all_states(n):
    return np.array(list(itertools.product((0, 1), repeat=n)), dtype=np.int8)


def test_energy_matches_hand_computation():
    p = BinaryQuadraticProblem(["a", "b", "c"], [1.0, -2.0, 0.5], [[2.0, 1.0, 0.0], [1.0, 0.0, 3.0], [0.0, 3.0, 1.0]],
                               offset=0.25)
    # x = (1, 1, 0): 0.25 + 1 − 2 + (Q_aa + 2 Q_ab + Q_bb) = 0.25 − 1 + 2 + 2 + 0 = 3.25
    assert p.energy([1, 1, 0]) == pytest.approx(3.25)
    # x = (0, 1, 1): 0.25 − 2 + 0.5 + (0 + 2·3 + 1) = 5.75
    assert p.energy([0, 1, 1]) == pytest.approx(5.75)


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_round_trip(tmp_path, suffix):
    p = random_problem(groups=[(range(4), 2), (range(5, 8), 1)])
    p.metadata = {"model": "m", "options": {"x": 1}}
    path = p.save(tmp_path / f"p{suffix}")
    q = load_problem(path)
    assert q.variables == p.variables and q.constraints == p.constraints and q.metadata == p.metadata
    X = all_states(8)
    np.testing.assert_array_equal(q.energies(X), p.energies(X))
    assert q.free_indices == (4,)


def test_penalty_form_and_default_penalty_keep_ground_state_feasible():
    p = random_problem(n=9, groups=[(range(5), 2), (range(5, 9), 3)])
    X = all_states(9)
    lin, quad, off = p.penalty_qubo(p.default_penalty())
    penal = off + X @ lin + np.einsum("ki,ki->k", X @ quad, X)
    viol = np.array([sum(v * v for v in p.violations(x)) for x in X])
    np.testing.assert_allclose(penal, p.energies(X) + p.default_penalty() * viol, rtol=1e-12, atol=1e-9)
    assert p.is_feasible(X[np.argmin(penal)])
    feasible = np.array([p.is_feasible(x) for x in X])
    assert penal.min() == pytest.approx(p.energies(X)[feasible].min())


def test_dimod_conversions_agree():
    dimod = pytest.importorskip("dimod")
    p = random_problem(n=6, m=2)
    bqm = p.to_bqm(penalty=3.0)
    cqm = p.to_cqm()
    for x in all_states(6):
        sample = dict(enumerate(x.tolist()))
        viol = sum(v * v for v in p.violations(x))
        assert bqm.energy(sample) == pytest.approx(p.energy(x) + 3.0 * viol)
        assert cqm.objective.energy(sample) == pytest.approx(p.energy(x))
        assert cqm.check_feasible(sample) == p.is_feasible(x)
    assert isinstance(bqm, dimod.BinaryQuadraticModel)


def test_bad_input_is_refused_clearly(tmp_path):
    with pytest.raises(LmshrinkError, match="symmetric"):
        BinaryQuadraticProblem(["a", "b"], [0, 0], [[0, 1], [0, 0]])
    with pytest.raises(LmshrinkError, match="disjoint"):
        BinaryQuadraticProblem(["a", "b"], [0, 0], np.eye(2), constraints=[Constraint([0], 1), Constraint([0, 1], 1)])
    with pytest.raises(LmshrinkError, match="asks for 3 of 2"):
        Constraint([0, 1], 3)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "nope"}')
    with pytest.raises(LmshrinkError, match="unknown format"):
        load_problem(bad)
