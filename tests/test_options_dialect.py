"""One options dialect for every plugin kind (declared as a dataclass, checked by core.options.read_options) and
capabilities declared once (a solver's ``exact`` and ``problem_types`` read them, a composite reads its child's)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from lmshrink.core import (
    BinaryQuadraticProblem,
    Composite,
    LmshrinkError,
    Option,
    RankAllocationProblem,
    Samples,
    Solver,
    SolverCapabilities,
    option,
)
from lmshrink.core.options import Configurable, option_table, read_options, validate_options


def _solver(name):
    from lmshrink.plugins import get_solver

    return get_solver(name)


def _objective(name):
    from lmshrink.plugins import get_objective

    return get_objective(name)


def _method(name):
    from lmshrink.baselines import get_method

    return get_method(name)


# --- every plugin kind: a dataclass declaration, options from a mapping or from strings ---------------------------
@pytest.mark.parametrize("plugin, given, strings, expected", [
    (lambda: _solver("anneal"), {"num_reads": 7}, ["num-reads=7"], {"num_reads": 7}),
    (lambda: _solver("rank-milp"), {"grid_step": 4, "fill": True}, ["grid_step=4", "fill=yes"],
     {"grid_step": 4, "fill": True}),
    (lambda: _solver("rank-uniform"), {"fill": True}, ["fill=true"], {"fill": True}),
    (lambda: _objective("fisher"), {"batch_size": 2, "first_order": True}, ["batch_size=2", "first_order=1"],
     {"batch_size": 2, "first_order": True}),
    (lambda: _objective("fermi-rank"), {"ratio": 1, "target": "ce"}, ["ratio=1", "target=ce"],
     {"ratio": 1.0, "target": "ce"}),
    (lambda: _method("sleb"), {"samples": None}, ["samples=none"], {"samples": None}),
    (lambda: _method("evopress"), {"generations": 3.0}, ["generations=3"], {"generations": 3}),
], ids=["binary-solver", "rank-solver", "uniform", "objective", "rank-objective", "method", "method-minimum"])
def test_every_plugin_kind_reads_its_options_from_a_mapping_or_strings(plugin, given, strings, expected):
    p = plugin()
    assert isinstance(p, Configurable) and p.Options is not None
    assert p.options == option_table(p.Options)
    assert p.parse_options(strings) == expected
    full = p.validate(given)
    assert {k: full[k] for k in expected} == expected and set(full) == set(p.options)
    assert p.validate(p.Options(**full)) == full  # an instance of the dataclass is accepted as it is


def test_a_composite_reads_its_own_and_its_childs_options():
    tabu = _solver("tabu")
    assert tabu.parse_options(["num_reads=3", "polish=false"]) == {"num_reads": 3, "polish": False}
    with pytest.raises(LmshrinkError, match=r"Solver 'tabu' has no option 'polsh'\. Did you mean 'polish'\?"):
        tabu.validate({"polsh": True})


@pytest.mark.parametrize("plugin, bad, suggestion", [
    (lambda: _solver("anneal"), "num_read", "num_reads"),
    (lambda: _solver("rank-milp"), "grid_stpe", "grid_step"),
    (lambda: _objective("pairs"), "sample", "samples"),
    (lambda: _method("surrogate"), "budgte", "budget"),
])
def test_an_unknown_option_gets_a_suggestion_and_the_valid_names(plugin, bad, suggestion):
    p = plugin()
    for given in ({bad: 1}, [f"{bad}=1"]):
        with pytest.raises(LmshrinkError) as exc:
            p.validate(given)
        message = str(exc.value)
        assert message.startswith(f"{p.plugin_kind} {p.name!r} has no option")
        assert f"Did you mean {suggestion!r}?" in message and "Valid options: " in message


def test_values_are_converted_and_checked_in_one_place():
    declared = option_table(_Opts)
    assert read_options("P", declared, {"count": 2.0, "ratio": 1}) == {"count": 2, "ratio": 1.0}
    assert read_options("P", declared, ["count=3", "mode=b", "pair=1,2"]) == {"count": 3, "mode": "b",
                                                                              "pair": (1.0, 2.0)}
    assert read_options("P", declared, _Opts(count=5)) == {"count": 5, "ratio": 0.5, "mode": "a", "pair": (0.0, 1.0)}
    assert validate_options("P", declared, None) == {"count": 1, "ratio": 0.5, "mode": "a", "pair": (0.0, 1.0)}
    with pytest.raises(LmshrinkError, match=r"P option count must be an integer ≥ 1, not 0\."):
        read_options("P", declared, {"count": 0})
    with pytest.raises(LmshrinkError, match=r"P option mode must be one of \['a', 'b'\], not 'c'"):
        read_options("P", declared, ["mode=c"])
    with pytest.raises(LmshrinkError, match=r"Option 'count' must look like KEY=VALUE\."):
        read_options("P", declared, ["count"])


@dataclass(frozen=True)
class _Opts:
    count: int = option(1, "how many", minimum=1)
    ratio: float = option(0.5, "a fraction")
    mode: str = option("a", "which", choices=("a", "b"))
    pair: tuple[float, float] = option((0.0, 1.0), "two numbers")


def test_the_older_mapping_declaration_still_works():
    class Old(Solver):
        name = "old-style"
        options = {"reads": Option(4, "reads", int)}

        def sample(self, problem, *, num_solutions, seed, time_limit, reads):
            return Samples(np.zeros((1, problem.num_variables)), {"reads": reads})

    assert Old.Options is None and Old().validate({"reads": 2}) == {"reads": 2}


# --- capabilities declared once -------------------------------------------------------------------------------------
class _RankSampler(Solver):
    name = "rank-sampler"
    description = "a rank solver that claims proofs"
    capabilities = SolverCapabilities(problem_types=(RankAllocationProblem,), proves_optimality=True)

    def sample(self, problem, *, num_solutions, seed, time_limit):
        return Samples(np.zeros((1, problem.num_matrices)))


class _Passthrough(Composite):
    step = "passthrough"

    def transform(self, problem, run_child, options, *, num_solutions, seed, time_limit):
        return run_child(problem)


def test_exact_and_problem_types_are_read_from_the_capabilities():
    assert _RankSampler.exact is True and _RankSampler.problem_types == (RankAllocationProblem,)
    assert "exact" not in vars(_RankSampler) and "problem_types" not in vars(_RankSampler)
    assert Solver.problem_types == (BinaryQuadraticProblem,) and Solver.exact is False


def test_the_older_class_attributes_fold_into_the_capabilities():
    class Legacy(Solver):
        name = "legacy"
        problem_types = (RankAllocationProblem,)
        exact = True

        def sample(self, problem, *, num_solutions, seed, time_limit):
            raise NotImplementedError

    assert Legacy.capabilities.problem_types == (RankAllocationProblem,) and Legacy.capabilities.proves_optimality
    assert Legacy.problem_types == (RankAllocationProblem,) and Legacy().exact is True
    assert "exact" not in vars(Legacy) and "problem_types" not in vars(Legacy)


def test_a_composite_reports_the_wrapped_solvers_capabilities_without_copying_them():
    child = _RankSampler()
    wrapped = _Passthrough(child)
    assert wrapped.problem_types == (RankAllocationProblem,) and wrapped.exact is True
    assert wrapped.capabilities.postprocessing == ("passthrough",)
    assert "exact" not in vars(wrapped) and "problem_types" not in vars(wrapped)
    assert wrapped.name == "rank-sampler" and wrapped.description == child.description
    twice = _Passthrough(_Passthrough(child))  # the steps of the whole stack, innermost first
    assert twice.capabilities.postprocessing == ("passthrough", "passthrough") and twice.exact is True


def test_a_registered_stack_reports_its_samplers_capabilities():
    from lmshrink.solvers.composites import RepairedSolver
    from lmshrink.solvers.fermigrad import FermiGradRelaxation, FermiGradSolver

    assert issubclass(FermiGradSolver, RepairedSolver)
    assert FermiGradSolver.capabilities == FermiGradRelaxation.capabilities
    solver = FermiGradSolver()
    assert solver.capabilities.postprocessing == ("repair", "polish")
    assert solver.capabilities.requires == FermiGradRelaxation.capabilities.requires


def test_the_conformance_declaration_check_catches_a_default_the_option_refuses():
    from lmshrink.testing import check_declaration

    class Careless(Solver):
        name = "careless"
        options = {"reads": Option(0, "reads", int, minimum=1)}

        def sample(self, problem, *, num_solutions, seed, time_limit, reads):
            raise NotImplementedError

    check_declaration(_solver("anneal"))
    with pytest.raises(AssertionError, match="refuses its own default"):
        check_declaration(Careless())


def test_every_registered_solver_declares_what_it_is_once():
    from lmshrink.plugins import registry
    from lmshrink.testing import check_declaration

    for entry in registry("solver"):
        assert "exact" not in vars(entry.obj) and "problem_types" not in vars(entry.obj), entry.name
        assert entry.problem_types == tuple(entry.obj.capabilities.problem_types), entry.name
        check_declaration(entry.create())
