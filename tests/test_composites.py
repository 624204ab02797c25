"""Each composite once, around solvers that know nothing of it: a sampler of random (mostly infeasible) states and
the exhaustive solver, checked against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from lmshrink.core import LmshrinkError, Samples, Solver
from lmshrink.plugins import get_solver
from lmshrink.solvers.composites import FixingComposite, PenaltyComposite, RepairComposite, choose_penalty
from problems import brute_force, random_problem


class RandomStates(Solver):
    """Uniformly random 0/1 vectors, blind to the constraints (and a record of the problems it was given)."""

    name = "random-states"
    seen: list = []

    def sample(self, problem, *, num_solutions, seed, time_limit):
        RandomStates.seen.append(problem)
        return Samples(np.random.default_rng(seed).integers(0, 2, (40, problem.num_variables)))


PROBLEM = random_problem([(6, 2), (5, 3)], free=2, seed=21)


def test_repair_composite_makes_any_sampler_feasible_and_reports_the_raw_samples():
    raw_states = np.random.default_rng(7).integers(0, 2, (40, PROBLEM.num_variables))
    feasible = [PROBLEM.is_feasible(x) for x in raw_states]
    solver = RepairComposite(RandomStates())
    assert solver.name == "random-states" and solver.capabilities.postprocessing == ("repair", "polish")
    result = solver.solve(PROBLEM, num_solutions=5, seed=7, polish=False)
    assert all(PROBLEM.is_feasible(s.x) for s in result)
    assert result.raw.num_samples == 40 and result.raw.num_feasible == sum(feasible)
    assert result.info["num_repaired"] == 40 - sum(feasible)
    polished = solver.solve(PROBLEM, num_solutions=5, seed=7)
    assert polished.best.energy <= result.best.energy and polished.raw == result.raw
    if any(feasible):
        kept = solver.solve(PROBLEM, num_solutions=1, seed=7, repair=False, polish=False)
        assert kept.best.energy == pytest.approx(PROBLEM.energies(raw_states[feasible]).min())
    with pytest.raises(LmshrinkError, match="found no feasible state"):
        RandomStates().solve(random_problem([(20, 1)], seed=1), seed=7)  # unwrapped: nothing to keep


def test_penalty_composite_hands_the_child_the_penalty_form_and_its_minimum_is_the_optimum():
    RandomStates.seen.clear()
    result = RepairComposite(PenaltyComposite(RandomStates())).solve(PROBLEM, seed=1)
    (given,) = RandomStates.seen
    weight, rule = choose_penalty(PROBLEM)
    assert not given.constraints and (result.info["penalty"], result.info["penalty_rule"]) == (weight, rule)
    X = np.random.default_rng(0).integers(0, 2, (50, PROBLEM.num_variables))
    violation = np.array([sum(v * v for v in PROBLEM.violations(x)) for x in X])
    np.testing.assert_allclose(given.energies(X), PROBLEM.energies(X) + weight * violation, rtol=1e-12)
    # the exhaustive solver on the unconstrained penalty form finds the constrained optimum
    exact = PenaltyComposite(get_solver("exact"))
    best = exact.solve(PROBLEM, num_solutions=1)
    assert best.best.energy == pytest.approx(brute_force(PROBLEM)[0], abs=1e-9)
    assert exact.solve(PROBLEM, penalty=3.5).info["penalty_rule"] == "given"


def test_fixing_composite_fixes_agreed_variables_and_solves_the_rest():
    exact = get_solver("exact")
    whole = FixingComposite(exact, limit=None).solve(PROBLEM, num_solutions=3)
    np.testing.assert_allclose(whole.energies, brute_force(PROBLEM)[1][:3], rtol=1e-9)
    assert whole.proven_optimal and whole.info["num_fixed"] == 0
    reduced = FixingComposite(exact, limit=6).solve(PROBLEM, num_solutions=3, seed=0)
    info = reduced.info
    assert info["num_fixed"] == PROBLEM.num_variables - 6 and not reduced.proven_optimal
    assert reduced.best.energy >= brute_force(PROBLEM)[0] - 1e-9
    assert reduced.best.energy <= info["reduction"]["classical_best_energy"] + 1e-9  # the classical best stays
    for name, value in info["fixed_variables"].items():
        assert all(s.x[PROBLEM.variables.index(name)] == value for s in reduced)
    np.testing.assert_allclose(PROBLEM.energies(np.array([s.x for s in reduced])), reduced.energies, rtol=1e-12)


def test_a_composite_refuses_an_option_its_child_has_too():
    with pytest.raises(LmshrinkError, match="both have the option 'polish'"):
        RepairComposite(get_solver("tabu"))
