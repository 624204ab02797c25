"""The pairwise Bayesian surrogate (lmshrink.search.surrogate): it recovers a planted QUBO from noisy
measurements, its Thompson draws follow its posterior, and its feature map reproduces lmshrink's energies."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lmshrink.core import BinaryQuadraticProblem, Constraint
from lmshrink.search.surrogate import PairwiseSurrogate, features, fit_quality, qubo_weights, weights_to_qubo
from lmshrink.stats import spearman


def planted(n, seed):
    rng = np.random.default_rng(seed)
    lin = rng.normal(size=n)
    A = rng.normal(size=(n, n)) * 0.3
    Q = (A + A.T) / 2
    np.fill_diagonal(Q, 0.0)
    return lin, Q


def test_features_reproduce_the_problem_energy():
    lin, Q = planted(7, 0)
    Q = Q + np.diag(np.arange(7) * 0.1)  # a diagonal too: it folds into the linear term
    problem = BinaryQuadraticProblem([f"v{i}" for i in range(7)], lin, Q, 0.5, [])
    X = np.random.default_rng(1).integers(0, 2, size=(20, 7))
    w = qubo_weights(lin, Q, 0.5)
    np.testing.assert_allclose(features(X) @ w, problem.energies(X), rtol=1e-12)
    l2, Q2, c2 = weights_to_qubo(w, 7)
    back = BinaryQuadraticProblem([f"v{i}" for i in range(7)], l2, Q2, c2, [])
    np.testing.assert_allclose(back.energies(X), problem.energies(X), rtol=1e-12)


def test_recovers_a_planted_qubo_from_noisy_measurements():
    n = 8
    lin, Q = planted(n, 2)
    w_true = qubo_weights(lin, Q, 1.0)
    rng = np.random.default_rng(3)
    X = rng.integers(0, 2, size=(150, n))
    y_true = features(X) @ w_true
    model = PairwiseSurrogate(n)
    model.observe(X, y_true + rng.normal(0, 0.05, len(X)), 0.05)
    np.testing.assert_allclose(model.mean_weights, w_true, atol=0.08)
    test = rng.integers(0, 2, size=(60, n))
    mean, sd = model.predict(test)
    q = fit_quality(mean, features(test) @ w_true)
    assert q["r2"] > 0.99 and q["spearman"] > 0.99
    assert np.all(sd < 0.1)


def test_under_a_cardinality_constraint_it_finds_the_planted_optimum():
    # with Σx = M fixed the weights are not identifiable, but the energies on feasible states are
    n, M = 12, 4
    lin, Q = planted(n, 4)
    w_true = qubo_weights(lin, Q)
    states = np.array([[1 if i in c else 0 for i in range(n)] for c in itertools.combinations(range(n), M)])
    energies = features(states) @ w_true
    rng = np.random.default_rng(5)
    pick = rng.choice(len(states), 120, replace=False)
    model = PairwiseSurrogate(n)
    model.observe(states[pick], energies[pick] + rng.normal(0, 0.02, 120), 0.02)
    mean, _ = model.predict(states)
    assert spearman(mean, energies) > 0.97
    assert int(np.argmin(mean)) == int(np.argmin(energies))
    # the posterior-mean QUBO handed to a solver has the same optimum
    l2, Q2, c2 = weights_to_qubo(model.mean_weights, n)
    problem = BinaryQuadraticProblem([f"v{i}" for i in range(n)], l2, Q2, c2, [Constraint(tuple(range(n)), M)])
    assert int(np.argmin(problem.energies(states))) == int(np.argmin(energies))


def test_a_good_prior_needs_fewer_measurements():
    n = 10
    lin, Q = planted(n, 6)
    w_true = qubo_weights(lin, Q)
    rng = np.random.default_rng(7)
    X = rng.integers(0, 2, size=(15, n))
    y = features(X) @ w_true + rng.normal(0, 0.01, 15)
    test = rng.integers(0, 2, size=(200, n))
    truth = features(test) @ w_true
    plain = PairwiseSurrogate(n)
    plain.observe(X, y, 0.01)
    prior = PairwiseSurrogate(n, prior=3.0 * (w_true + rng.normal(0, 0.05, len(w_true))))  # right shape, wrong scale
    prior.observe(X, y, 0.01)
    prior.fit()
    assert prior.alpha == pytest.approx(1 / 3, rel=0.1)
    err_plain = np.abs(plain.predict(test)[0] - truth).mean()
    err_prior = np.abs(prior.predict(test)[0] - truth).mean()
    assert err_prior < 0.3 * err_plain


def test_thompson_draws_follow_the_posterior():
    n = 5
    lin, Q = planted(n, 8)
    rng = np.random.default_rng(9)
    X = rng.integers(0, 2, size=(8, n))  # few measurements: a wide posterior
    model = PairwiseSurrogate(n)
    model.observe(X, features(X) @ qubo_weights(lin, Q) + rng.normal(0, 0.1, 8), 0.1)
    test = rng.integers(0, 2, size=(6, n))
    mean, sd = model.predict(test)
    draws = np.array([features(test) @ model.sample_weights(rng) for _ in range(4000)])
    np.testing.assert_allclose(draws.mean(0), mean, atol=4 * sd.max() / np.sqrt(4000) + 1e-9)
    np.testing.assert_allclose(draws.std(0), sd, rtol=0.08)
