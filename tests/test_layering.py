"""The layering of pyproject.toml's [tool.importlinter] holds: core at the bottom importing nothing of lmshrink and no
heavy library, plugins above it, the building blocks above those, pipeline and CLI on top. Function-local imports
count; today's few exceptions are listed, commented, in the contract, so a new one fails here. The light paths
(``import lmshrink``, ``--help``, ``lmshrink plugins``, the solvers) import neither torch, transformers nor an optional
extra; and an import inside a function is there only to keep one of those out of a light path, or an optional extra
out of its module."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is in the test extra: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[1]
#: the environment of a fresh interpreter that imports this checkout's lmshrink
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def lint(config: Path | None = None) -> subprocess.CompletedProcess:
    """``lint-imports`` on this checkout's lmshrink (no cache written into the repository)."""
    call = f"lint_imports(config_filename={str(config)!r}, no_cache=True)" if config else "lint_imports(no_cache=True)"
    return subprocess.run([sys.executable, "-c", f"import sys; from importlinter.cli import lint_imports; "
                           f"sys.exit({call})"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)


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
#: the libraries behind torch: what a light path must not load
TORCH = ("torch", "transformers", "safetensors", "accelerate")


def run_python(code: str) -> str:
    """The last line ``code`` prints, run in a fresh interpreter on this checkout."""
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip().splitlines()[-1]


def _distribution(requirement: str) -> str:
    """The normalised distribution name of a requirement string ("dwave_samplers>=1.2" → "dwave-samplers")."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.\-]+", requirement)[0]).lower()


def _needed(requirements: Iterable[str]) -> set[str]:
    """The distributions ``requirements`` name and, transitively, what those need (extras' markers left out)."""
    seen, todo = set(), [_distribution(r) for r in requirements]
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        try:
            todo += [_distribution(r) for r in metadata.requires(dist) or [] if "extra ==" not in r]
        except metadata.PackageNotFoundError:
            pass
    return seen


def extra_modules(transitive: bool = True) -> set[str]:
    """Top-level modules that only pyproject's optional extras install (with what those need, when
    ``transitive``): numba, dimod, qiskit, lm_eval, peft, ..."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [r for rs in project["optional-dependencies"].values() for r in rs if not r.startswith("lmshrink")]
    extras = _needed(wanted) if transitive else {_distribution(r) for r in wanted}
    required = _needed(project["dependencies"])
    return {module for module, dists in metadata.packages_distributions().items()
            if {_distribution(d) for d in dists} & extras and not {_distribution(d) for d in dists} & required}


@pytest.mark.parametrize("path", list(LIGHT_PATHS))
def test_light_paths_import_no_torch_and_no_extra(path):
    # what keeps torch, transformers and the extras inside functions is these paths: they must stay free of them
    heavy = sorted(set(TORCH) | extra_modules(transitive=False))
    loaded = run_python(f"import sys\n{LIGHT_PATHS[path]}\n"
                        f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    assert loaded == "[]", f"{path} imports {loaded}"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def statements(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    """(import, inside a function, inside a try) for every import of a module, a module-level ``require("numba",
    ...)`` counted as ``import numba``; what ``if TYPE_CHECKING`` guards is never run and left out."""
    def visit(node: ast.AST, local: bool, guarded: bool) -> Iterator:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, local, guarded
            elif (isinstance(child, ast.Call) and child.args and isinstance(child.args[0], ast.Constant)
                  and getattr(child.func, "id", getattr(child.func, "attr", "")) == "require"):
                yield ast.Import(names=[ast.alias(child.args[0].value)], lineno=child.lineno), local, guarded
            yield from visit(child, local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)),
                             guarded or isinstance(child, ast.Try))
    yield from visit(tree, False, False)


def imported(module: str, package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules an import may load, absolute (a ``from`` import's names may be submodules)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    target = node.module
    if node.level:
        base = module.split(".") if package else module.split(".")[:-1]
        target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
    return [target] + [f"{target}.{alias.name}" for alias in node.names]


def lmshrink_modules() -> dict[str, tuple[Path, ast.Module]]:
    return {module_name(p): (p, ast.parse(p.read_text(encoding="utf-8"))) for p in (ROOT / "lmshrink").rglob("*.py")}


def libraries_loaded(modules: dict[str, tuple[Path, ast.Module]]) -> dict[str, set[str]]:
    """Module → the top-level libraries importing it loads: its module-level imports, its packages' and those of
    every lmshrink module it loads, to a fixed point."""
    libraries, inner = {}, {}
    for name, (path, tree) in modules.items():
        targets = [t for node, local, _ in statements(tree) if not local
                   for t in imported(name, path.name == "__init__.py", node)]
        libraries[name] = {t.split(".")[0] for t in targets if t.split(".")[0] != "lmshrink"}
        parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        inner[name] = {t for t in targets if t in modules} | parents
    changed = True
    while changed:
        changed = False
        for name in modules:
            more = set().union(*(libraries[m] for m in inner[name])) - libraries[name]
            if more:
                libraries[name] |= more
                changed = True
    return libraries


def test_imports_inside_functions_keep_torch_or_an_extra_out():
    # an import inside a function hides what a module needs and what it costs: it is kept only where it stops torch
    # (a module on a light path) or an optional extra (anywhere: the extra may be absent) from loading with its module
    modules = lmshrink_modules()
    loads = libraries_loaded(modules)
    extras = extra_modules()
    light = set(json.loads(run_python("import sys, json\n" + "\n".join(LIGHT_PATHS.values()) + "\n"
                                      "print(json.dumps(sorted(m for m in sys.modules if m.startswith('lmshrink'))))")))
    assert "lmshrink.cli" in light and "lmshrink.solvers.exact" in light
    needless = []
    for name, (path, tree) in modules.items():
        if name == "lmshrink.compress.remote.modeling_lmshrink":
            continue  # the modeling file saved models carry: it runs without lmshrink, beside any transformers
        for node, local, guarded in statements(tree):
            if not local or guarded:
                continue
            pulled = set()
            for target in imported(name, path.name == "__init__.py", node):
                pulled |= loads.get(target, set()) if target.startswith("lmshrink.") else {target.split(".")[0]}
            if pulled & extras or (pulled & set(TORCH) and name in light):
                continue
            needless.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not needless, ("imports inside functions that keep neither torch off a light path nor an optional extra "
                          "out; move them to the top of their module:\n" + "\n".join(needless))


def test_the_import_check_sees_a_needless_local_import():
    # the check's own parts on a module written here: a stdlib import inside a function is needless, numba is an
    # extra, and a require() at module level counts as an import
    tree = ast.parse("from ..core.errors import require\nnumba = require('numba', 'fast', 'x')\n"
                     "def f():\n    import json\n    from .kernels import topk\n    try:\n        import numba\n"
                     "    except ImportError:\n        pass\n")
    found = [(ast.unparse(n), local, guarded) for n, local, guarded in statements(tree)]
    assert found == [("from ..core.errors import require", False, False), ("import numba", False, False),
                     ("import json", True, False), ("from .kernels import topk", True, False),
                     ("import numba", True, True)]
    node = ast.parse("from ..kernels import topk").body[0]
    assert imported("lmshrink.solvers.exact", False, node) == ["lmshrink.kernels", "lmshrink.kernels.topk"]
    assert imported("lmshrink.solvers", True, node) == ["lmshrink.kernels", "lmshrink.kernels.topk"]
    assert "numba" in extra_modules() and "numpy" not in extra_modules() and "torch" not in extra_modules()
