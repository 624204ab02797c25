"""Pages written at docs build time (mkdocs-gen-files runs this file): the CLI reference, from lmshrink's argparse
parser; the API page of the package's top level, from the names ``lmshrink`` loads on first use; the layering page,
from pyproject.toml's import-linter contracts; and the reference run's plot, copied from benchmarks/reference so
the site and the README show one file."""

from __future__ import annotations

import sys
from pathlib import Path

import mkdocs_gen_files

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "docs")]

import gen_cli  # noqa: E402  (docs/gen_cli.py, found through the path above)

#: files of the repository shown on the site, by their path there
COPIED = {"img/perplexity_vs_m.png": ROOT / "benchmarks/reference/removal/perplexity_vs_m.png"}

def top_level_page() -> str:
    """The API page of ``lmshrink``: every name it loads on first use (``lmshrink._LAZY``), from its module."""
    import lmshrink

    lazy = "\n\n".join(f"::: {module}.{attr}" for module, attr in lmshrink._LAZY.values())
    names = ", ".join(f"`{name}`" for name in lmshrink._LAZY)
    return f"""# `lmshrink`

The package's top level: the core contracts re-exported (see [core](core.md)), `hookimpl` for plugins
([plugins](plugins.md)), and the names loaded on first use so that `import lmshrink` stays light: {names},
documented here from their modules.

{lazy}

::: lmshrink.core.problem.load_problem
"""


def layers_page() -> str:
    """The layering contracts of pyproject.toml's ``[tool.importlinter]``, as the tests enforce them."""
    linter = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    lines = ["# Layers", "",
             "Which part of lmshrink may import which, as `tests/test_layering.py` enforces it with import-linter "
             "(`lint-imports`; the contracts live in `pyproject.toml`, `[tool.importlinter]`). Imports inside "
             "functions count as much as those at the top of a module.", "",
             "An import sits inside a function only to keep torch off a light path (`import lmshrink`, "
             "`lmshrink --help`, `lmshrink plugins`, the solvers and the problem library, which load neither torch nor "
             "an optional extra) or to keep an optional extra (numba, dimod, qiskit, pyomo, lm-eval, peft, matplotlib, "
             "ray) out of its module, so that the module loads without it; everything else is imported at the top of "
             "its module. `tests/test_layering.py` checks both, statically for every import and by running the light "
             "paths.", ""]
    for contract in linter["contracts"]:
        lines += [f"## {contract['name']}", ""]
        if contract["type"] == "layers":
            lines += ["Each layer may import the layers below it, never one above; modules on one line are siblings "
                      "(`a : b` may import each other, `a | b` may not). From the top:", ""]
            for container in contract["containers"]:
                lines += [f"1. {' '.join(f'`{container}.{m}`' if m not in ':|' else m for m in layer.split())}"
                          for layer in contract["layers"]]
            lines += [""]
            if contract.get("ignore_imports"):
                lines += ["Today's exceptions (function-local imports that reach one layer up; a new one fails the "
                          "tests):", ""] + [f"- `{rule}`" for rule in contract["ignore_imports"]] + [""]
        elif contract["type"] == "forbidden":
            lines += [f"{', '.join(f'`{m}`' for m in contract['source_modules'])} may not import "
                      f"{', '.join(f'`{m}`' for m in contract['forbidden_modules'])}.", ""]
    return "\n".join(lines)


with mkdocs_gen_files.open("reference/cli.md", "w") as page:
    page.write(gen_cli.render())
with mkdocs_gen_files.open("reference/api/lmshrink.md", "w") as page:
    page.write(top_level_page())
with mkdocs_gen_files.open("reference/layers.md", "w") as page:
    page.write(layers_page())
for target, source in COPIED.items():
    with mkdocs_gen_files.open(target, "wb") as copy:
        copy.write(source.read_bytes())
