"""The command-line reference page, written from the ``lmshrink`` argparse parser itself.

``render()`` walks :func:`lmshrink.cli.build_parser` and its subparsers (nested ones such as ``problems export``
included) and returns one Markdown page: per command its help, its usage line and every option with its metavar,
default and help text, so the reference cannot drift from the flags. The docs build calls it through
``docs/gen_pages.py`` (mkdocs-gen-files); ``python docs/gen_cli.py`` prints the page. Only lmshrink's own commands
are documented: installed plugins are left out (``LMSHRINK_PLUGINS`` set empty) while the parser is built.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator

_MARKDOWN_SPECIALS = re.compile(r"([\\`*_\[\]|#])")


def escape(text: str) -> str:
    """``text`` with the characters Markdown would read as markup escaped, so the page shows it as argparse says it."""
    text = _MARKDOWN_SPECIALS.sub(r"\\\1", " ".join(text.split()))
    return text.replace("<", "&lt;").replace(">", "&gt;")


def build_parser() -> argparse.ArgumentParser:
    """lmshrink's parser with its built-in commands only (installed plugins may add commands of their own)."""
    from lmshrink import plugins
    from lmshrink.cli import build_parser as lmshrink_parser

    saved = os.environ.get(plugins.manager.PLUGINS_ENV)
    os.environ[plugins.manager.PLUGINS_ENV] = ""
    plugins.reset()
    try:
        return lmshrink_parser()
    finally:
        if saved is None:
            del os.environ[plugins.manager.PLUGINS_ENV]
        else:
            os.environ[plugins.manager.PLUGINS_ENV] = saved
        plugins.reset()


def subcommands(parser: argparse.ArgumentParser,
                prefix: str = "lmshrink") -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """``(full command, help, parser)`` for every subcommand, depth first, in the parser's order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                full = f"{prefix} {name}"
                yield full, helps.get(name, ""), sub
                yield from subcommands(sub, full)


def documented_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The arguments a user types: everything but ``--help``, subcommand choosers and suppressed options."""
    return [a for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and a.help != argparse.SUPPRESS]


def help_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help of ``action`` as ``--help`` prints it (``%(default)s`` and the like filled in), on one line."""
    if not action.help:
        return ""
    return " ".join(parser._get_formatter()._expand_help(action).split())


def signature(action: argparse.Action) -> str:
    """``--remove M`` / ``MODEL_DIR``: how the argument is written, with its metavar."""
    if not action.option_strings:
        return action.metavar if isinstance(action.metavar, str) else action.dest
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    if isinstance(action.metavar, str):
        metavar = action.metavar
    elif action.choices:
        metavar = "{" + ",".join(map(str, action.choices)) + "}"
    else:
        metavar = action.dest.upper()
    if action.nargs in ("*", "+"):
        metavar = f"{metavar} ..."
    elif action.nargs == "?":
        metavar = f"[{metavar}]"
    return ", ".join(f"{s} {metavar}" for s in action.option_strings)


def _default(action: argparse.Action) -> str:
    if not action.option_strings or action.nargs == 0 or action.default in (None, argparse.SUPPRESS, [], ()):
        return ""
    value = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else str(action.default)
    return f"`{value}`" if value else '`""`'


def _options_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| argument | default | meaning |", "|---|---|---|"]
    for action in documented_actions(parser):
        choices = f" Choices: {', '.join(map(str, action.choices))}." if action.choices else ""
        written = signature(action).replace("|", "\\|")  # a pipe inside a table cell, even in code, ends the cell
        rows.append(f"| `{written}` | {_default(action)} | {escape(help_text(parser, action) + choices)} |")
    return rows


def _usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().split()).removeprefix("usage: ")


def render(parser: argparse.ArgumentParser | None = None) -> str:
    """The whole CLI reference page, as Markdown."""
    parser = parser or build_parser()
    lines = [
        "# Command-line reference",
        "",
        "Generated from the `lmshrink` argparse parser when the docs are built (`docs/gen_cli.py`), so it lists "
        "exactly the flags `lmshrink COMMAND --help` shows. Plugins may add commands of their own; "
        "`lmshrink plugins` lists them.",
        "",
        "The flags of `prune`, `svd`, `compress` and `heal` are generated from the fields of `lmshrink.PruneConfig`, "
        "`SvdConfig`, `CompressConfig` and `HealConfig` (`lmshrink.pipeline.settings`): each help below is its "
        "field's, and each flag sets the Python keyword of the same name (`--seq-len` sets `seq_len`; `--no-eval`, "
        "`--quiet`, `--option` and the `--*-option` flags set `evaluate`, `progress` and the `*_options` fields).",
        "",
        f"`{_usage(parser)}`",
        "",
        escape(parser.description or ""),
        "",
    ]
    top = documented_actions(parser)
    if top:
        lines += _options_table(parser) + [""]
    for full, summary, sub in subcommands(parser):
        depth = full.count(" ")
        lines += [f"{'#' * min(depth + 1, 4)} `{full}`", "", escape(sub.description or summary), "",
                  f"`{_usage(sub)}`", ""]
        if documented_actions(sub):
            lines += _options_table(sub) + [""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
