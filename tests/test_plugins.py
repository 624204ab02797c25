import textwrap

import pytest

from lmshrink import plugins
from lmshrink.cli import main
from lmshrink.core import LmshrinkError, UnknownNameError
from test_problem import random_problem

PLUGIN = '''
import numpy as np
import lmshrink
from lmshrink.core import Samples, Solver


class FirstFeasible(Solver):
    """Returns the lexicographically first feasible state (a deliberately naive third-party solver)."""

    name = "first-feasible"

    def sample(self, problem, *, num_solutions, seed, time_limit):
        x = np.zeros(problem.num_variables, dtype=int)
        for c in problem.constraints:
            x[list(c.indices)[: c.equals]] = 1
        return Samples(x[None])


@lmshrink.hookimpl
def lmshrink_register_solvers(register):
    register(FirstFeasible)
'''


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A real distribution on sys.path whose entry point in group 'lmshrink' names the plugin module."""
    (tmp_path / "thirdparty_solver.py").write_text(PLUGIN)
    dist = tmp_path / "thirdparty_solver-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-solver\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""\
        [lmshrink]
        thirdparty = thirdparty_solver
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.reset()
    yield
    plugins.reset()


def test_entry_point_plugin_is_discovered_with_its_version(installed_plugin, capsys):
    entry = plugins.registry("solver").entry("first-feasible")
    assert (entry.package, entry.version) == ("thirdparty-solver", "1.2.3")
    p = random_problem(n=6, m=2)
    result = plugins.get_solver("first-feasible").solve(p)
    assert result.best.indices == (0, 1)
    assert result.best.energy == pytest.approx(p.energy([1, 1, 0, 0, 0, 0]))
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "first-feasible" in out and "thirdparty-solver" in out and "1.2.3" in out


def test_builtins_come_through_the_same_hooks():
    names = {e.name: e.package for e in plugins.registry("solver")}
    assert names["exact"] == "lmshrink" and names["anneal"] == "lmshrink"
    assert {"fisher", "pairs"} <= set(plugins.registry("objective").names())
    assert "llama" in plugins.registry("adapter").names()
    assert {"prune", "solve", "plugins"} <= set(plugins.registry("command").names())


def test_solvers_sharing_a_name_are_picked_by_problem_type():
    from lmshrink.core import BinaryQuadraticProblem, RankAllocationProblem

    for name in ("milp", "fermigrad"):
        binary, rank = plugins.get_solver(name, BinaryQuadraticProblem), plugins.get_solver(name, RankAllocationProblem)
        assert binary.problem_types == (BinaryQuadraticProblem,) and rank.problem_types == (RankAllocationProblem,)
        assert type(plugins.get_solver(name)) is type(binary)  # without a type: the block-removal one
        with pytest.raises(LmshrinkError, match=rf"get_solver\('{name}', problem\)"):
            rank.solve(BinaryQuadraticProblem(["a", "b"], [0.0, 0.0], [[0, 0], [0, 0]]))


def test_unknown_names_suggest_the_closest():
    with pytest.raises(UnknownNameError, match=r"Unknown solver 'aneal'\. Did you mean 'anneal'\?"):
        plugins.get_solver("aneal")
    with pytest.raises(UnknownNameError, match=r"Did you mean 'fisher'\?"):
        plugins.get_objective("fishr")


def test_unsupported_model_is_refused_with_guidance():
    class Strange:
        pass

    with pytest.raises(Exception, match="Supported: .*llama.*Adding an architecture"):
        plugins.find_adapter(Strange())
