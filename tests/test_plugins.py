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


def install(site, distribution: str, version: str, entry_point: str, module: str, code: str) -> None:
    """A real distribution in ``site`` whose entry point in group 'lmshrink' names ``module`` (written from
    ``code``)."""
    (site / f"{module}.py").write_text(code)
    dist = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
    (dist / "entry_points.txt").write_text(f"[lmshrink]\n{entry_point} = {module}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """An empty folder on sys.path for installed plugins; plugin caches are reset around the test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(plugins.PLUGINS_ENV, raising=False)
    plugins.reset()
    yield tmp_path
    plugins.reset()


@pytest.fixture
def installed_plugin(site):
    install(site, "thirdparty-solver", "1.2.3", "thirdparty", "thirdparty_solver", PLUGIN)


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


def test_solver_names_are_unique_and_short_names_are_aliases_by_problem_type():
    from lmshrink.core import BinaryQuadraticProblem, RankAllocationProblem

    solvers = plugins.registry("solver")
    names = solvers.names()
    assert len(names) == len(set(names))
    assert {"rank-milp", "rank-fermigrad", "rank-uniform"} <= set(names)
    for short in ("milp", "fermigrad"):
        binary, rank = plugins.get_solver(short, BinaryQuadraticProblem), plugins.get_solver(short, RankAllocationProblem)
        assert binary.name == short and binary.problem_types == (BinaryQuadraticProblem,)
        assert rank.name == f"rank-{short}" and rank.problem_types == (RankAllocationProblem,)
        assert plugins.get_solver(short).name == short  # without a problem: the canonical name, unambiguous
        assert short in solvers.entry(f"rank-{short}").aliases
        with pytest.raises(LmshrinkError, match=rf"Solver 'rank-{short}' solves RankAllocationProblem, not Binary"):
            rank.solve(BinaryQuadraticProblem(["a", "b"], [0.0, 0.0], [[0, 0], [0, 0]]))
    # an alias only one solver has needs no problem type
    assert plugins.get_solver("uniform").name == "rank-uniform"
    rank_problem = RankAllocationProblem(["w"], [(4, 4)], [[2.0, 1.0, 0.5, 0.1]], budget=8)
    assert plugins.get_solver("uniform", rank_problem).solve(rank_problem).solver == "rank-uniform"


def test_an_alias_shared_by_two_solvers_needs_the_problem_type():
    from lmshrink.core import BinaryQuadraticProblem, RankAllocationProblem
    from lmshrink.plugins import Registry

    class A:
        name, aliases, problem_types = "a-binary", ("short",), (BinaryQuadraticProblem,)

    class B:
        name, aliases, problem_types = "b-rank", ("short",), (RankAllocationProblem,)

    class C:
        name, aliases, problem_types = "c-binary", ("short",), (BinaryQuadraticProblem,)

    reg = Registry("solver")
    reg.add(A, package="p", version="1")
    reg.add(B, package="q", version="1")
    with pytest.raises(LmshrinkError, match="ambiguous without a problem type: it is a-binary .*b-rank"):
        reg.entry("short")
    with pytest.raises(LmshrinkError, match="both answer to 'short' for the same problems"):
        reg.add(C, package="r", version="1")
    with pytest.raises(LmshrinkError, match="Two solvers are called 'a-binary'"):
        reg.add(type("A2", (A,), {}), package="s", version="1")


def test_plugins_command_shows_canonical_names_aliases_and_problem_types(capsys):
    import json

    assert main(["plugins", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out) if r["kind"] == "solver"}
    assert rows["rank-milp"]["aliases"] == ["milp"] and rows["rank-milp"]["solves"] == "rank"
    assert rows["milp"]["aliases"] == [] and rows["milp"]["solves"] == "binary"
    assert rows["milp"]["capabilities"]["proves_optimality"] is True
    assert rows["tabu"]["capabilities"]["postprocessing"] == ["penalty", "repair", "polish"]
    assert main(["plugins"]) == 0
    table = capsys.readouterr().out
    line = next(row for row in table.splitlines() if " rank-milp " in row)
    assert "also: milp" in line and "[rank]" in line


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


BROKEN = "import lmshrink\nimport a_module_that_is_not_installed\n"

MISSPELLED = """
import lmshrink


@lmshrink.hookimpl
def lmshrink_register_solver(register):
    raise AssertionError("never called")
"""

FAILING_HOOK = """
import lmshrink


@lmshrink.hookimpl
def lmshrink_register_solvers(register):
    raise RuntimeError("cannot register today")
"""


def test_a_plugin_that_fails_to_import_is_skipped_with_one_warning_and_listed_as_broken(site, capsys):
    install(site, "broken-plugin", "0.1", "broken", "broken_plugin", BROKEN)
    with pytest.warns(plugins.PluginWarning) as caught:
        names = plugins.registry("solver").names()
    assert "anneal" in names
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1
    assert "'broken'" in messages[0] and "broken-plugin 0.1" in messages[0]
    assert "ModuleNotFoundError" in messages[0] and "a_module_that_is_not_installed" in messages[0]
    (problem,) = plugins.broken_plugins()
    assert (problem.distribution, problem.entry_point) == ("broken-plugin", "broken")
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "broken" in out and "broken-plugin" in out and "a_module_that_is_not_installed" in out


def test_a_misspelled_hook_is_a_warning_naming_the_plugin(site):
    install(site, "typo-plugin", "2.0", "typo", "typo_plugin", MISSPELLED)
    with pytest.warns(plugins.PluginWarning, match=r"'typo' of typo-plugin 2\.0 implements 'lmshrink_register_solver'.*"
                      r"Did you mean 'lmshrink_register_solvers'\?"):
        assert "exact" in plugins.registry("solver")
    assert [p.entry_point for p in plugins.loaded_plugins().unknown_hooks] == ["typo"]


def test_a_plugin_whose_hook_raises_is_skipped(site):
    install(site, "failing-plugin", "0.3", "failing", "failing_plugin", FAILING_HOOK)
    with pytest.warns(plugins.PluginWarning, match="'failing' of failing-plugin 0.3.*RuntimeError: cannot register"):
        assert "anneal" in plugins.registry("solver")
    assert [p.distribution for p in plugins.broken_plugins()] == ["failing-plugin"]


@pytest.mark.parametrize("selected, expected", [
    (None, {"thirdparty", "broken"}),
    ("", set()),
    ("thirdparty-solver", {"thirdparty"}),
    ("thirdparty", {"thirdparty"}),
    ("broken-plugin, other", {"broken"}),
])
def test_lmshrink_plugins_selects_which_installed_plugins_load(site, monkeypatch, selected, expected):
    install(site, "thirdparty-solver", "1.2.3", "thirdparty", "thirdparty_solver", PLUGIN)
    install(site, "broken-plugin", "0.1", "broken", "broken_plugin", BROKEN)
    if selected is not None:
        monkeypatch.setenv(plugins.PLUGINS_ENV, selected)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", plugins.PluginWarning)
        solvers = plugins.registry("solver")
        tried = {p.entry_point for p in plugins.broken_plugins()}
    assert ("first-feasible" in solvers) == ("thirdparty" in expected)
    assert tried == expected & {"broken"}
    assert "anneal" in solvers  # the built-ins always load
    assert {p.entry_point for p in plugins.loaded_plugins().not_selected} == {"thirdparty", "broken"} - expected
