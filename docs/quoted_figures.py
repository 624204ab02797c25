"""Figures the README and the docs quote from a reference summary file, each tied to the value it quotes.

A quoted figure is followed by an HTML comment naming where it comes from, which no renderer shows::

    22.18<!-- from: benchmarks/reference/removal/summary.json#aggregate[method=default,M=6,healed=linear].mean -->

The key is a path into the JSON file: ``.name`` a member, ``[3]`` a list entry, ``[k=v,k2=v2]`` the one list entry
whose members equal those values (``k~text``: whose member contains ``text``, for values an HTML comment cannot
hold such as ``--heal``). The figure is the text right before the comment: a number, compared at the precision it
is written with (``0.71`` matches 0.7068), a number written as ``1.6 × 10⁶``, or a word such as a method name,
compared exactly. ``check(path)`` lists every marked figure of a file that disagrees with its source;
tests/test_docs.py runs it on the README and every page, so a figure cannot silently drift from the reference run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

MARKER = re.compile(r"<!-- from: (?P<file>[^#\s]+)#(?P<key>.+?) -->")
_SUPERSCRIPT = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")
_FIGURE = re.compile(r"(?:(?P<mantissa>[-−]?\d+(?:\.\d+)?) × 10(?P<exp>[⁻]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+)"  # 1.6 × 10⁶
                     r"|(?P<token>[\w.+−-]+))\s*$")  # 0.71, angular
_STEP = re.compile(r"\.(?P<name>[^.\[]+)|\[(?P<select>[^\]]+)\]")


@dataclass(frozen=True)
class Quote:
    """One marked figure: where it stands, what it says and what its source holds."""

    path: Path
    line: int
    figure: str
    source: str
    key: str
    value: Any

    def agrees(self) -> bool:
        """Whether the figure, read at its own precision, is the source's value."""
        return figure_matches(self.figure, self.value)


@lru_cache(maxsize=None)
def _load(file: str) -> Any:
    return json.loads((ROOT / file).read_text())


def resolve(data: Any, key: str) -> Any:
    """The value at ``key`` (``.a[k=v].b[0]`` syntax, see the module docstring) inside ``data``."""
    key = key if key.startswith((".", "[")) else "." + key
    pos = 0
    for step in _STEP.finditer(key):
        if step.start() != pos:
            raise KeyError(f"cannot read the key {key!r} at {key[pos:]!r}")
        pos = step.end()
        if step["name"] is not None:
            data = data[step["name"]]
        elif step["select"].lstrip("-").isdigit():
            data = data[int(step["select"])]
        else:
            data = _select(data, step["select"], key)
    if pos != len(key):
        raise KeyError(f"cannot read the key {key!r} at {key[pos:]!r}")
    return data


def _select(items: list[dict[str, Any]], selector: str, key: str) -> Any:
    conditions = [re.split(r"(=|~)", part, maxsplit=1) for part in selector.split(",")]

    def fits(item: dict[str, Any]) -> bool:
        for name, op, want in conditions:
            have = str(item.get(name.strip()))
            if (op == "=" and have != want.strip()) or (op == "~" and want.strip() not in have):
                return False
        return True

    found = [item for item in items if fits(item)]
    if len(found) != 1:
        raise KeyError(f"[{selector}] in {key!r} matches {len(found)} entries, not one")
    return found[0]


def figure_matches(figure: str, value: Any) -> bool:
    """``figure`` as written (``0.71``, ``1.6 × 10⁶``, ``angular``) against the source's ``value``."""
    m = _FIGURE.search(figure)
    if m is None:
        return False
    if m["mantissa"] is not None:
        exponent = int(m["exp"].translate(_SUPERSCRIPT))
        return isinstance(value, (int, float)) and _same_number(m["mantissa"], value / 10**exponent)
    token = m["token"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _same_number(token, value)
    return token == str(value)


def _same_number(text: str, value: float) -> bool:
    text = text.replace("−", "-")
    try:
        quoted = float(text)
    except ValueError:
        return False
    decimals = len(text.partition(".")[2])
    return abs(quoted - value) <= 0.5 * 10**-decimals + 1e-9


def quotes(path: Path) -> list[Quote]:
    """Every marked figure of the Markdown file ``path``, with its source's value."""
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        for marker in MARKER.finditer(line):
            before = MARKER.sub("", line[: marker.start()])
            m = _FIGURE.search(before)
            figure = m.group(0).strip() if m else ""
            value = resolve(_load(marker["file"]), marker["key"])
            found.append(Quote(path, number, figure, marker["file"], marker["key"], value))
    return found


def check(path: Path) -> list[str]:
    """One sentence per marked figure of ``path`` that disagrees with its source (none: every figure is right)."""
    return [f"{q.path.name}:{q.line}: {q.figure!r} is quoted from {q.source}#{q.key}, which holds {q.value!r}"
            for q in quotes(path) if not q.agrees()]
