"""A conformance suite for :class:`~lmshrink.core.Solver` implementations of binary problems (as ``dimod.testing``
is for samplers).

lmshrink runs it on every built-in solver; a plugin author runs the same checks on theirs, either by subclassing
:class:`SolverConformance` in a test module (pytest collects the subclass because its name starts with ``Test``)::

    from lmshrink.testing import SolverConformance

    class TestMySolver(SolverConformance):
        solver = MySolver()

or with one call, :func:`run_solver_conformance`. The solver's :class:`~lmshrink.core.SolverCapabilities` decide
what applies and how it runs (its ``offline_options`` where it needs credentials, its ``quick_options``; a missing
optional module it ``requires`` skips the tests):

- the declaration (:func:`check_declaration`): capabilities naming the problem types, which ``problem_types`` and
  ``exact`` read; every option with help and accepting its own default; the capabilities naming only options;
- every returned state is feasible under one constraint, several constraints, and constraints with free
  variables; the states are distinct and sorted by energy; the result is plain JSON;
- energies recomputed from the problem saved to a file and read back equal the reported ones, and none is below
  the optimum over all 2^N states (brute force on 12 variables); with ``expect_optimum`` the best equals it;
- a solver that proves optimality returns the k lowest states of the brute force and says so
  (``proven_optimal``);
- the same seed gives the same states (``reproducible``);
- a tiny ``time_limit`` on a larger problem returns feasible states and either reports stopping
  (``stopped_early``), proves optimality, or was quick anyway (``honours_time_limit``);
- weighted bands (parameter budgets, ``L ≤ Σ w·x ≤ U`` with unequal integer weights and a band that rules out
  some cardinalities): a solver that lists ``"weighted"`` in ``capabilities.constraint_kinds`` returns only states
  inside the bands, none below the brute-force optimum, and, when it proves optimality, the k lowest of the brute
  force; any other solver refuses such a problem in one sentence (``weighted_band_problems``);
- an unknown option names the valid ones, a value of the wrong type names the option and what it accepts, and a
  bad ``num_solutions`` is refused, each in one sentence.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..core import (
    BinaryQuadraticProblem,
    Constraint,
    LmshrinkError,
    ProblemTooLargeError,
    SolutionSet,
    Solver,
    SolverCapabilities,
    load_problem,
)
from .context import labelled as _context
from .context import pytest as _pytest


# --- problems ------------------------------------------------------------------------------------------------------
def random_problem(groups: Sequence[tuple[int, int]], *, free: int = 0, seed: int = 0, linear: bool = True,
                   name: str = "random") -> BinaryQuadraticProblem:
    """A dense problem with mixed-sign couplings: ``groups`` lists (size, equals) per constraint, then ``free`` vars.

    The variables of the groups come first, in order, the free ones last; the variable order is then shuffled so
    the groups are not contiguous.
    """
    rng = np.random.default_rng(seed)
    n = sum(size for size, _ in groups) + free
    A = rng.normal(size=(n, n))
    Q = (A + A.T) / 2
    lin = rng.normal(size=n) if linear else np.zeros(n)
    perm = rng.permutation(n)
    constraints, start = [], 0
    for k, (size, m) in enumerate(groups):
        constraints.append(Constraint(tuple(sorted(perm[start : start + size].tolist())), m, f"group{k}"))
        start += size
    return BinaryQuadraticProblem(
        variables=[f"v{i}" for i in range(n)],
        linear=lin,
        quadratic=Q,
        offset=float(rng.normal()),
        constraints=constraints,
        metadata={"generator": name, "seed": seed},
    )


def fisher_problem(n: int, m: int, *, seed: int = 0, samples: int | None = None, kinds: int = 1, spread: float = 1.0,
                   shared: float = 0.0) -> BinaryQuadraticProblem:
    """A block-removal problem like lmshrink's Fisher objective: H = AᵀA / s from random per-sample gradients.

    Block ``i`` has scale ``exp(spread · N(0, 1))`` (unequal blocks), ``s = samples`` (default 2N) gradient rows;
    ``shared > 0`` adds a common direction per sample (strong couplings of either sign, harder). With
    ``kinds > 1`` the blocks alternate between kinds and each kind gets its own cardinality ``m // kinds``.
    """
    rng = np.random.default_rng(seed)
    s = samples or 2 * n
    scales = np.exp(spread * rng.normal(size=n))
    A = rng.normal(size=(s, n)) * scales
    if shared:
        # a shared direction per sample: correlated blocks, with strong couplings of either sign (a harder problem)
        A += shared * np.outer(rng.normal(size=s), rng.normal(size=n) * scales)
    H = A.T @ A / s
    if kinds == 1:
        constraints = [Constraint(tuple(range(n)), m, "blocks")]
    else:
        constraints = [Constraint(tuple(range(k, n, kinds)), m // kinds, f"kind{k}") for k in range(kinds)]
    return BinaryQuadraticProblem(
        variables=[f"block{i}" for i in range(n)],
        linear=np.zeros(n),
        quadratic=H,
        constraints=constraints,
        metadata={"generator": "fisher", "seed": seed},
    )


def brute_force(problem: BinaryQuadraticProblem) -> tuple[float, np.ndarray]:
    """The lowest energy over all 2^N vectors that satisfy the constraints, and the sorted energies of all of them."""
    n = problem.num_variables
    X = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(np.int8)
    feasible = np.array([problem.is_feasible(x) for x in X])
    E = problem.energies(X[feasible])
    return float(E.min()), np.sort(E)


def conformance_problems() -> dict[str, BinaryQuadraticProblem]:
    """The suite's seeded 12-variable problems: one constraint, two, two with free variables, a Fisher-like one."""
    return {
        "one-group": random_problem([(11, 4)], seed=11),
        "two-groups": random_problem([(6, 2), (6, 3)], seed=12),
        "groups+free": random_problem([(5, 2), (4, 1)], free=3, seed=13),
        "fisher": fisher_problem(12, 4, seed=14, kinds=2),
    }


def band_problem(problem: BinaryQuadraticProblem, members: Sequence[int], weights: Sequence[float],
                 lower: float | None, upper: float | None, name: str = "budget") -> BinaryQuadraticProblem:
    """``problem`` with the constraint over ``members`` replaced by the band ``lower ≤ Σ w·x ≤ upper``; the other
    constraints are kept where they do not overlap it."""
    band = Constraint(tuple(members), name=name, weights=tuple(float(w) for w in weights), lower=lower, upper=upper)
    taken = set(members)
    others = [c for c in problem.constraints if not taken & set(c.indices)]
    return BinaryQuadraticProblem(variables=list(problem.variables), linear=problem.linear,
                                  quadratic=problem.quadratic, offset=problem.offset, constraints=[band, *others],
                                  metadata={**problem.metadata, "band": name})


def weighted_band_problems() -> dict[str, BinaryQuadraticProblem]:
    """The suite's seeded 12-variable problems with a weighted band (unequal integer weights, like the parameter
    counts of attention and MLP units): alone, a one-sided budget beside a cardinality, and a band with free
    variables. Each band admits several cardinalities and rules out others."""
    one = random_problem([(12, 4)], seed=21)
    card = random_problem([(8, 3), (4, 2)], seed=22)
    free = random_problem([(9, 3)], free=3, seed=23)
    return {
        # a + 3m ∈ [10, 11] over 6 light (a of them on) and 6 heavy (m) units: 4 to 7 ones, never fewer or more
        "band": band_problem(one, one.constraints[0].indices, [1, 3] * 6, 10, 11),
        # at most 20 over weights 2..9 beside a cardinality
        "budget+cardinality": band_problem(card, card.constraints[0].indices, [2, 3, 5, 7, 9, 4, 6, 8], None, 20),
        "band+free": band_problem(free, free.constraints[0].indices, [4, 1, 4, 1, 4, 1, 6, 6, 6], 9, 12),
    }


def check_weighted_bands(solver: Solver, options: Mapping[str, Any], num_solutions: int = 5) -> None:
    """A solver that honours weighted bands returns feasible states (the k lowest when it proves optimality); one
    that does not refuses a band problem in one sentence."""
    honours = "weighted" in solver.capabilities.constraint_kinds
    for name, problem in weighted_band_problems().items():
        with _context(f"band problem {name!r}"):
            if not honours:
                try:
                    solver.solve(problem, num_solutions=num_solutions, seed=3, **options)
                except LmshrinkError as exc:
                    assert "weighted" in str(exc) and _one_sentence(str(exc)), str(exc)
                else:
                    raise AssertionError("a solver without 'weighted' in its constraint_kinds accepted a band")
                continue
            result = solver.solve(problem, num_solutions=num_solutions, seed=3, **options)
            assert len(result) >= 1
            bad = [s.x for s in result if not problem.is_feasible(s.x)]
            assert not bad, f"a state outside the band: {bad[0]}"
            optimum, energies = brute_force(problem)
            assert result.best.energy >= optimum - 1e-9 * max(1.0, abs(optimum))
            if solver.capabilities.proves_optimality:
                check_proof(problem, result, num_solutions)


def time_limit_problem(solver: Solver) -> BinaryQuadraticProblem:
    """A problem the solver's default budget takes well over a tenth of a second on (an enumerating solver gets one
    with 3·10^7 feasible states, others 48 variables with nearly equal block scales)."""
    if solver.capabilities.exponential_in == "feasible_states":
        return fisher_problem(36, 8, seed=5, spread=0.2)
    return fisher_problem(48, 12, seed=5, spread=0.2)


# --- checks --------------------------------------------------------------------------------------------------------
def _one_sentence(message: str) -> bool:
    """No sentence end before the last character (dots inside names like a.b() are fine), no line break."""
    return not re.findall(r"[.!?](?=\s+[A-Z])", message.strip()) and "\n" not in message.strip()


def missing_modules(solver: Solver) -> list[str]:
    """The optional modules the solver ``requires`` that are not installed."""
    missing = []
    for module in solver.capabilities.requires:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    return missing


def run_options(solver: Solver, quick: bool = True) -> dict[str, Any]:
    """Options for a conformance run: the offline ones where the solver needs credentials, then the quick ones."""
    caps = solver.capabilities
    opts = dict(caps.offline_options) if caps.needs_credentials or caps.needs_network else {}
    if quick:
        opts.update(caps.quick_options)
    return opts


def check_solutions(problem: BinaryQuadraticProblem, result: SolutionSet, num_solutions: int,
                    min_distinct: int = 1) -> None:
    """Feasible, distinct, sorted, at most ``num_solutions``, plain JSON, with a raw summary."""
    xs = [s.x for s in result]
    assert min(min_distinct, num_solutions) <= len(xs) <= num_solutions, \
        f"{len(xs)} solutions for num_solutions={num_solutions} (expected at least {min_distinct})"
    bad = [x for x in xs if not problem.is_feasible(x)]
    assert not bad, f"infeasible state returned: {bad[0]}"
    assert len(set(xs)) == len(xs), "duplicate states returned"
    assert list(result.energies) == sorted(result.energies), "solutions are not sorted by energy"
    assert result.raw is not None and result.raw.num_samples >= 1, "no raw-sample summary"
    json.dumps(result.to_dict())  # reports and `lmshrink solve --json` write it


def check_energies(problem: BinaryQuadraticProblem, result: SolutionSet, tmp_path: Path,
                   expect_optimum: bool = False) -> None:
    """Energies recomputed from the saved and reloaded problem; none below the brute-force optimum."""
    loaded = load_problem(problem.save(Path(tmp_path) / "problem.json"))
    xs = np.array([s.x for s in result])
    np.testing.assert_allclose(loaded.energies(xs), result.energies, rtol=1e-10, atol=1e-10,
                               err_msg="reported energies differ from the problem's")
    optimum, _ = brute_force(problem)
    tol = 1e-9 * max(1.0, abs(optimum))
    assert result.best.energy >= optimum - tol, f"energy {result.best.energy} is below the optimum {optimum}"
    if result.raw.best_energy is not None:
        assert result.raw.best_energy >= optimum - tol, "the raw summary reports an energy below the optimum"
    if expect_optimum:
        assert result.best.energy <= optimum + tol, f"best {result.best.energy}, optimum {optimum}"


def check_proof(problem: BinaryQuadraticProblem, result: SolutionSet, num_solutions: int) -> None:
    """A solver that proves optimality returns the k lowest states and says it proved the best."""
    _, energies = brute_force(problem)
    k = min(num_solutions, len(energies))
    assert result.proven_optimal, "a solver that proves optimality did not report a proof on a small problem"
    assert len(result) == k, f"{len(result)} solutions, expected the {k} lowest"
    np.testing.assert_allclose(result.energies, energies[:k], rtol=1e-9, atol=1e-9,
                               err_msg="not the k lowest states")


def check_time_limit(solver: Solver, options: Mapping[str, Any], limit: float = 0.05) -> SolutionSet | None:
    """A tiny ``time_limit`` on a larger problem: feasible states, and a reported stop, a proof, or a finish.

    Returns None, checking nothing, when the solver refuses that problem as too large (e.g. an offline stand-in).
    """
    problem = time_limit_problem(solver)
    try:
        result = solver.solve(problem, num_solutions=2, seed=0, time_limit=limit, **options)
    except ProblemTooLargeError:
        return None
    assert result and all(problem.is_feasible(s.x) for s in result), "infeasible states after a time limit"
    # a run that did not stop must have been quick anyway (a generous bound: this is no timing test)
    assert result.stopped_early or result.proven_optimal or result.time_s <= limit + 1.0, \
        f"ran {result.time_s:.2f} s with time_limit={limit} and did not report stopped_early"
    if result.stopped_early:
        assert not result.proven_optimal or solver.capabilities.proves_optimality
    return result


def check_bad_options(solver: Solver, problem: BinaryQuadraticProblem) -> None:
    """Unknown option, wrong types and a bad num_solutions: one sentence each, naming what is wrong."""
    options = run_options(solver)
    try:
        solver.solve(problem, definitely_not_an_option=1, **options)
    except LmshrinkError as exc:
        message = str(exc)
        assert "definitely_not_an_option" in message and "Valid options:" in message, message
        assert all(name in message for name in solver.options), f"not every valid option is listed: {message}"
    else:
        raise AssertionError("an unknown option was accepted")
    for name, opt in solver.options.items():
        try:
            opt.check(object())
        except (TypeError, ValueError):
            pass
        else:
            continue  # the option takes any value
        try:
            solver.solve(problem, **{**options, name: object()})
        except LmshrinkError as exc:
            assert name in str(exc) and _one_sentence(str(exc)), f"option {name}: {exc}"
        else:
            raise AssertionError(f"option {name} accepted a value of the wrong type")
    for bad in (0, -1, 1.5, None):
        try:
            solver.solve(problem, num_solutions=bad, **options)
        except LmshrinkError as exc:
            assert "num_solutions" in str(exc) and _one_sentence(str(exc)), str(exc)
        else:
            raise AssertionError(f"num_solutions={bad!r} was accepted")


def run_solver_conformance(solver: Solver, *, tmp_path: str | Path, options: Mapping[str, Any] | None = None,
                           num_solutions: int = 5, expect_optimum: bool = False, min_distinct: int = 1) -> None:
    """Every check of this module on ``solver`` (``options``: default :func:`run_options`)."""
    opts = run_options(solver) if options is None else dict(options)
    caps = solver.capabilities
    with _context("declaration"):
        check_declaration(solver)
    for name, problem in conformance_problems().items():
        with _context(f"problem {name!r}"):
            result = solver.solve(problem, num_solutions=num_solutions, seed=3, **opts)
            check_solutions(problem, result, num_solutions, min_distinct)
            check_energies(problem, result, Path(tmp_path), expect_optimum)
            if caps.proves_optimality:
                check_proof(problem, result, num_solutions)
            if caps.reproducible:
                again = solver.solve(problem, num_solutions=num_solutions, seed=3, **opts)
                assert [s.x for s in again] == [s.x for s in result], "the same seed gave other states"
    if caps.honours_time_limit:
        with _context("time limit"):
            check_time_limit(solver, run_options(solver, quick=False))
    with _context("weighted bands"):
        check_weighted_bands(solver, opts, num_solutions)
    with _context("bad options"):
        check_bad_options(solver, conformance_problems()["one-group"])


def check_declaration(solver: Solver) -> None:
    """The solver declares what it is once: capabilities (a :class:`~lmshrink.core.SolverCapabilities` naming the
    problem types, which :attr:`~lmshrink.core.Solver.problem_types` and :attr:`~lmshrink.core.Solver.exact` read),
    and options with help whose defaults they accept; the capabilities name only declared options."""
    caps = solver.capabilities
    assert isinstance(caps, SolverCapabilities), f"capabilities is {type(caps).__name__}, not SolverCapabilities"
    assert caps.problem_types, "the capabilities name no problem type"
    assert tuple(solver.problem_types) == tuple(caps.problem_types), "problem_types differs from the capabilities'"
    assert solver.exact == caps.proves_optimality, "exact differs from capabilities.proves_optimality"
    assert set(caps.budget_options.values()) <= set(solver.options), "a budget option is not a declared option"
    assert set(caps.offline_options) | set(caps.quick_options) <= set(solver.options), \
        "an offline or quick option is not a declared option"
    for name, opt in solver.options.items():
        assert opt.help, f"option {name!r} has no help"
        try:
            opt.check(opt.default)
        except (TypeError, ValueError):
            raise AssertionError(f"option {name!r} refuses its own default {opt.default!r}") from None


class SolverConformance:
    """Base class of a pytest conformance test class for one solver of binary problems (subclass it as
    ``TestSomething`` and set :attr:`solver`).

    Optionally set :attr:`options` (default: :func:`run_options`), :attr:`expect_optimum` (the best must be the
    optimum on the suite's 12-variable problems) and :attr:`min_distinct` (fewest distinct solutions of 5 asked).
    Each problem is solved once per class and the result shared by the checks.
    """

    solver: ClassVar[Solver]
    options: ClassVar[Mapping[str, Any] | None] = None
    expect_optimum: ClassVar[bool] = False
    min_distinct: ClassVar[int] = 1
    num_solutions: ClassVar[int] = 5

    if _pytest is not None:

        @_pytest.fixture(autouse=True)
        def _lmshrink_requires(self) -> None:
            missing = missing_modules(self.solver)
            if missing:
                _pytest.skip(f"{self.solver.name}: optional module {missing[0]} is not installed")
            caps = self.solver.capabilities
            if (caps.needs_credentials or caps.needs_network) and not caps.offline_options and self.options is None:
                _pytest.skip(f"{self.solver.name} needs {caps.needs_credentials or 'the network'} and declares no "
                             "offline_options")

    def _options(self) -> dict[str, Any]:
        return run_options(self.solver) if self.options is None else dict(self.options)

    def _result(self, name: str) -> tuple[BinaryQuadraticProblem, SolutionSet]:
        cache = type(self).__dict__.get("_results")
        if cache is None:
            cache = {}
            type(self)._results = cache
        if name not in cache:
            problem = conformance_problems()[name]
            cache[name] = problem, self.solver.solve(problem, num_solutions=self.num_solutions, seed=3,
                                                     **self._options())
        return cache[name]

    def _each_result(self) -> Iterator[tuple[BinaryQuadraticProblem, SolutionSet]]:
        """Each conformance problem with the solver's result on it, inside a context that names the problem."""
        for name in conformance_problems():
            with _context(f"problem {name!r}"):
                yield self._result(name)

    def test_capabilities(self) -> None:
        check_declaration(self.solver)
        assert BinaryQuadraticProblem in self.solver.capabilities.problem_types

    def test_feasible_distinct_sorted(self) -> None:
        for problem, result in self._each_result():
            check_solutions(problem, result, self.num_solutions, self.min_distinct)

    def test_energies_recomputed_from_the_saved_problem(self, tmp_path: Path) -> None:
        for problem, result in self._each_result():
            check_energies(problem, result, tmp_path, self.expect_optimum)

    def test_proves_the_k_lowest(self) -> None:
        if not self.solver.capabilities.proves_optimality:
            _pytest.skip(f"{self.solver.name} does not claim to prove optimality")
        for problem, result in self._each_result():
            check_proof(problem, result, self.num_solutions)

    def test_seed_reproduces(self) -> None:
        if not self.solver.capabilities.reproducible:
            _pytest.skip(f"{self.solver.name} does not claim that a seed reproduces its results")
        for problem, result in self._each_result():
            again = self.solver.solve(problem, num_solutions=self.num_solutions, seed=3, **self._options())
            assert [s.x for s in again] == [s.x for s in result], "the same seed gave other states"

    def test_time_limit(self) -> None:
        if not self.solver.capabilities.honours_time_limit:
            _pytest.skip(f"{self.solver.name} does not honour time_limit")
        options = run_options(self.solver, quick=False) if self.options is None else dict(self.options)
        if check_time_limit(self.solver, options) is None:
            _pytest.skip(f"{self.solver.name} refuses the time-limit problem as too large with {options}")

    def test_weighted_bands(self) -> None:
        check_weighted_bands(self.solver, self._options(), self.num_solutions)

    def test_bad_options(self) -> None:
        check_bad_options(self.solver, conformance_problems()["one-group"])


__all__ = [
    "SolverConformance",
    "brute_force",
    "check_bad_options",
    "check_declaration",
    "check_energies",
    "check_proof",
    "check_solutions",
    "check_time_limit",
    "check_weighted_bands",
    "conformance_problems",
    "fisher_problem",
    "missing_modules",
    "random_problem",
    "run_options",
    "run_solver_conformance",
    "time_limit_problem",
    "weighted_band_problems",
    "band_problem",
]
