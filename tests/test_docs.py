"""The docs cannot drift from the code or from the reference runs: the command-line reference is generated from the
argparse parser and lists every flag of every subcommand with its help, and every figure the README and the docs
pages quote from a reference summary file (marked ``<!-- from: FILE#KEY -->``) equals the value there."""

from __future__ import annotations

import argparse
import re
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))

import gen_cli  # noqa: E402  (docs/gen_cli.py)
import quoted_figures  # noqa: E402  (docs/quoted_figures.py)

PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return gen_cli.build_parser()


@pytest.fixture(scope="module")
def page(parser) -> str:
    return gen_cli.render(parser)


def _walk(parser: argparse.ArgumentParser, prefix: str = "lmshrink"):
    """Every (command, parser) pair, found here independently of gen_cli's walk."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{prefix} {name}")


def _section(page: str, command: str) -> str:
    """The part of the reference page about ``command`` (up to the next command's heading)."""
    start = page.index(f"`{command}`\n")
    following = re.search(r"^#+ `lmshrink ", page[start + 1:], re.M)
    return page[start: start + 1 + following.start()] if following else page[start:]


def test_the_reference_documents_every_command_flag_and_help(parser, page):
    commands = list(_walk(parser))
    assert {"lmshrink prune", "lmshrink svd", "lmshrink solve", "lmshrink problems export"} <= {c for c, _ in commands}
    checked = 0
    for command, sub in commands[1:]:
        assert re.search(rf"^#+ `{command}`$", page, re.M), f"{command} has no heading in the CLI reference"
        section = _section(page, command)
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, (argparse._HelpAction,
                                                                       argparse._SubParsersAction)):
                continue
            names = action.option_strings or [action.metavar or action.dest]
            for name in names:
                assert f"`{name}" in section or f", {name}" in section, f"{command}: {name} is missing"
            helptext = " ".join((action.help or "") .split()) % {**vars(action), "prog": sub.prog}
            assert gen_cli.escape(helptext) in section, f"{command} {names[0]}: its help differs from the parser's"
            checked += 1
    assert checked > 100  # prune alone has about 30 flags


def test_prune_remove_is_documented_as_the_parser_says(page):
    section = _section(page, "lmshrink prune")
    row = next(line for line in section.splitlines() if line.startswith("| `--remove"))
    assert "6" in row.split("|")[2]  # its default


def test_the_docs_build_writes_the_reference_render_returns(tmp_path, page):
    # run docs/gen_pages.py as the build does (mkdocs-gen-files' editor), writing into tmp_path instead of the site
    gen_files = pytest.importorskip("mkdocs_gen_files.editor", reason="the docs extra: pip install -e '.[docs]'")
    from mkdocs.structure.files import Files

    config = SimpleNamespace(site_dir=str(tmp_path / "site"), use_directory_urls=True)
    with gen_files.FilesEditor(Files([]), config, directory=str(tmp_path)):
        runpy.run_path(str(DOCS / "gen_pages.py"))
    assert (tmp_path / "reference" / "cli.md").read_text() == page
    assert (tmp_path / "img" / "perplexity_vs_m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import lmshrink

    api = (tmp_path / "reference" / "api" / "lmshrink.md").read_text()
    for module, attr in lmshrink._LAZY.values():  # every name the top level loads on first use has its entry
        assert f"::: {module}.{attr}\n" in api
    layers = (tmp_path / "reference" / "layers.md").read_text()
    assert "1. `lmshrink.cli`" in layers and layers.rstrip().endswith("`numba`.")


def test_quoted_figures_are_parsed_at_their_written_precision():
    assert quoted_figures.figure_matches("0.71", 0.7068)
    assert not quoted_figures.figure_matches("0.70", 0.7068)
    assert quoted_figures.figure_matches("22.18", 22.1849)
    assert quoted_figures.figure_matches("1.6 × 10⁶", 1_634_000.0)
    assert not quoted_figures.figure_matches("1.7 × 10⁶", 1_634_000.0)
    assert quoted_figures.figure_matches("angular", "angular")
    assert not quoted_figures.figure_matches("sleb", "angular")
    data = {"rows": [{"method": "default (--heal none)", "M": 6, "v": 1.5}, {"method": "default", "M": 6, "v": 2.5}]}
    assert quoted_figures.resolve(data, "rows[method~heal none,M=6].v") == 1.5
    assert quoted_figures.resolve(data, "rows[method=default,M=6].v") == 2.5
    assert quoted_figures.resolve(data, ".rows[1].M") == 6
    with pytest.raises(KeyError):
        quoted_figures.resolve(data, "rows[M=6].v")  # two entries match


def test_every_quoted_figure_equals_its_source():
    problems = [p for path in PAGES for p in quoted_figures.check(path)]
    assert not problems, "\n".join(problems)


def test_the_readme_results_table_is_quoted_from_the_reference_run():
    quotes = quoted_figures.quotes(ROOT / "README.md")
    table = [q for q in quotes if q.source == "benchmarks/reference/removal/summary.json"]
    assert len(table) >= 25  # 5 rows of 6 cells, names and figures
    # the main command's figures come from the run that compares its calibration texts
    assert {q.source for q in quotes} == {"benchmarks/reference/removal/summary.json",
                                          "benchmarks/reference/travel/summary.json"}
    results = quoted_figures.quotes(DOCS / "reference" / "results.md")
    assert len(results) >= 150


def test_a_wrong_figure_is_reported(tmp_path):
    page = tmp_path / "page.md"
    key = "benchmarks/reference/removal/summary.json#held_out.perplexity"
    page.write_text(f"unpruned 14.05<!-- from: {key} -->, or 14.50<!-- from: {key} -->\n")
    problems = quoted_figures.check(page)
    assert len(problems) == 1 and "'14.50'" in problems[0] and "held_out.perplexity" in problems[0]


def test_the_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150
