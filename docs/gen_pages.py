"""Pages written at docs build time (mkdocs-gen-files runs this file): the CLI reference, from lmshrink's argparse
parser; the API page of the package's top level, from the names ``lmshrink`` loads on first use; and the reference
run's plot, copied from benchmarks/reference so the site and the README show one file."""

from __future__ import annotations

import sys
from pathlib import Path

import mkdocs_gen_files

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

::: lmshrink.pipeline.config.PruneConfig

::: lmshrink.core.problem.load_problem
"""


with mkdocs_gen_files.open("reference/cli.md", "w") as page:
    page.write(gen_cli.render())
with mkdocs_gen_files.open("reference/api/lmshrink.md", "w") as page:
    page.write(top_level_page())
for target, source in COPIED.items():
    with mkdocs_gen_files.open(target, "wb") as copy:
        copy.write(source.read_bytes())
