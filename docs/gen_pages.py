"""Pages written at docs build time (mkdocs-gen-files runs this file): the CLI reference, from lmshrink's argparse
parser, and the reference run's plot, copied from benchmarks/reference so the site and the README show one file."""

from __future__ import annotations

import sys
from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "docs")]

import gen_cli  # noqa: E402  (docs/gen_cli.py, found through the path above)

#: files of the repository shown on the site, by their path there
COPIED = {"img/perplexity_vs_m.png": ROOT / "benchmarks/reference/removal/perplexity_vs_m.png"}

with mkdocs_gen_files.open("reference/cli.md", "w") as page:
    page.write(gen_cli.render())
for target, source in COPIED.items():
    with mkdocs_gen_files.open(target, "wb") as copy:
        copy.write(source.read_bytes())
