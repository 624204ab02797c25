"""The example solver plugin (examples/solver_plugin) installed for real: pip installs it into a temporary folder on
sys.path, lmshrink discovers it through its entry point, and lmshrink's solver conformance suite passes on it. The
solver example of the docs (docs/howto/plugins.md) is that plugin's file, included whole, under 60 lines."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

import lmshrink.plugins as plugins
from lmshrink.cli import main
from lmshrink.testing import random_problem, run_solver_conformance
from plugin_packages import forget_modules, pip_install

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "solver_plugin"
SOLVER_FILE = PLUGIN / "src" / "lmshrink_greedy" / "solver.py"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    pip_install(PLUGIN, target)
    sys.path.insert(0, str(target))
    forget_modules("lmshrink_greedy")  # import it from the fresh install, not from an earlier import
    plugins.reset()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        forget_modules("lmshrink_greedy")
        plugins.reset()


def test_the_example_is_one_file_under_60_lines_and_is_the_docs_example():
    code = SOLVER_FILE.read_text()
    assert len(code.splitlines()) < 60
    guide = (ROOT / "docs" / "howto" / "plugins.md").read_text()
    section = guide[guide.index("## Writing a solver plugin"):guide.index("## Adding an architecture")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    # the page includes the file itself when the site is built (pymdownx.snippets), so the two cannot differ
    assert f'--8<-- "{SOLVER_FILE.relative_to(ROOT).as_posix()}"\n' in blocks


def test_the_installed_plugin_is_found_and_passes_the_conformance_suite(installed, tmp_path, capsys):
    entry = plugins.registry("solver").entry("greedy")
    assert (entry.package, entry.version) == ("lmshrink-greedy", "0.1.0")
    solver = plugins.get_solver("greedy", random_problem([(6, 2)]))
    run_solver_conformance(solver, tmp_path=tmp_path)
    assert main(["plugins"]) == 0
    assert "lmshrink-greedy" in capsys.readouterr().out


def test_the_plugin_options_are_typed_on_the_command_line(installed, tmp_path, capsys):
    path = random_problem([(6, 2), (4, 1)], free=2, seed=1).save(tmp_path / "p.json")
    assert main(["solve", str(path), "--solver", "greedy", "--option", "restarts=3", "--json"]) == 0
    assert '"restarts": 3' in capsys.readouterr().out
    assert main(["solve", str(path), "--solver", "greedy", "--option", "restarts=0"]) == 2
    assert "option restarts must be an integer ≥ 1, not '0'" in capsys.readouterr().err
