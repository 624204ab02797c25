"""The layering of pyproject.toml's [tool.importlinter] holds: core at the bottom importing nothing of lmshrink and no
heavy library, plugins above it, the building blocks above those, pipeline and CLI on top. Function-local imports
count; today's few exceptions are listed, commented, in the contract, so a new one fails here. And the light paths
(``import lmshrink``, ``--help``, ``lmshrink plugins``, the solvers) import neither torch nor transformers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is in the test extra: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[1]


def lint(config: Path | None = None) -> subprocess.CompletedProcess:
    """``lint-imports`` on this checkout's lmshrink (no cache written into the repository)."""
    call = f"lint_imports(config_filename={str(config)!r}, no_cache=True)" if config else "lint_imports(no_cache=True)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", f"import sys; from importlinter.cli import lint_imports; "
                           f"sys.exit({call})"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_every_contract_is_kept():
    run = lint()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout
    assert re.search(r"lmshrink layers.* KEPT", run.stdout)
    assert re.search(r"lmshrink\.core imports no heavy library.* KEPT", run.stdout)


def test_the_contract_catches_an_import_that_reaches_up(tmp_path):
    # the same layers upside down and without exceptions: every import between two layers now reaches up, so the
    # checker must report them, or it would see nothing
    config = tmp_path / "layers.toml"
    layers = ROOT.joinpath("pyproject.toml").read_text()
    rows = re.search(r"layers = \[\n(.*?)\]", layers, re.S)[1].splitlines(keepends=True)
    block = "".join(reversed(rows))
    config.write_text(textwrap.dedent(f"""\
        [tool.importlinter]
        root_package = "lmshrink"

        [[tool.importlinter.contracts]]
        name = "layers upside down"
        type = "layers"
        containers = ["lmshrink"]
        layers = [
        {block}]
        """))
    run = lint(config)
    assert run.returncode == 1, run.stdout + run.stderr
    assert re.search(r"lmshrink\.\w+ is not allowed to import lmshrink\.\w+", run.stdout)


LIGHT_PATHS = {
    "import lmshrink": "import lmshrink, lmshrink.core",
    "lmshrink --help": "from lmshrink.cli import build_parser; build_parser().format_help()",
    "lmshrink plugins": "import contextlib, io; from lmshrink.cli import main\n"
                        "with contextlib.redirect_stdout(io.StringIO()): main(['plugins', '--json'])",
    "solvers and the problem library": "import lmshrink.solvers.exact, lmshrink.solvers.anneal, lmshrink.solvers.tabu, "
                                       "lmshrink.solvers.milp, lmshrink.solvers.fermigrad, lmshrink.library.formats",
}


@pytest.mark.parametrize("path", list(LIGHT_PATHS))
def test_light_paths_import_no_torch(path):
    # what keeps torch and transformers inside functions is these paths: they must stay free of both
    code = f"import sys\n{LIGHT_PATHS[path]}\nprint(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]", f"{path} imports {run.stdout.strip()}"
