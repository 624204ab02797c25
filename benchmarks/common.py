"""Helpers shared by the benchmark studies: statistics, CSV/JSON/Markdown output, plotting, logging."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


from lmshrink.experiments.metrics import HIT_RTOL, hits, tts  # noqa: F401 - shared with lmshrink sweep
from lmshrink.stats import rankdata, spearman  # noqa: F401 (re-exported for the studies)


# --- output ------------------------------------------------------------------------------------------------------
def write_csv(path: str | Path, rows: Iterable[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Rows of dicts as CSV (lists joined by spaces, floats as repr)."""
    rows = list(rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _csv_cell(r.get(k)) for k in cols})
    return path


def _csv_cell(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    if v is None:
        return ""
    return v


def write_json(path: str | Path, data: Any) -> Path:
    from lmshrink.report import write_json as _write

    return _write(path, data)


def fmt(v: Any, digits: int = 4) -> str:
    """A table cell: floats with ``digits`` significant digits, ∞ and NaN spelled out, None empty."""
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isinf(v):
            return "∞"
        if math.isnan(v):
            return "n/a"
        return f"{v:.{digits}g}"
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**9:
        return f"{v:.3g}"
    return str(v).replace("|", "\\|")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def environment(module: str | None = None) -> dict[str, Any]:
    """Where a study ran: library versions, CPU count, load, torch threads, the command line (as
    ``python -m module ARGS`` when ``module`` is given)."""
    from lmshrink.report import library_versions

    head = ["python", "-m", module] if module else [Path(sys.executable).name, sys.argv[0]]
    env: dict[str, Any] = {"versions": library_versions(), "platform": platform.platform(),
                           "cpus": os.cpu_count(), "command": " ".join([*head, *sys.argv[1:]])}
    if hasattr(os, "getloadavg"):
        env["load_average"] = [round(v, 2) for v in os.getloadavg()]
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        pass
    return env


class Log:
    """Timestamped progress lines on stderr (and kept for the report)."""

    def __init__(self, quiet: bool = False) -> None:
        self.start = time.perf_counter()
        self.quiet = quiet
        self.lines: list[str] = []

    def __call__(self, message: str) -> None:
        line = f"[{time.perf_counter() - self.start:7.1f} s] {message}"
        self.lines.append(line)
        if not self.quiet:
            print(line, file=sys.stderr, flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def dump_settings(settings: dict[str, Any]) -> str:
    """Settings as a fenced JSON block for a report."""
    return "```json\n" + json.dumps(settings, indent=1, default=str) + "\n```"


def study_main(argv: list[str] | None, *, run: Any, parse_args: Any, rerender: Any, default_dir: str) -> int:
    """The command line of a study: ``--render [DIR]`` redraws a finished run's plots and report.md, anything
    else is parsed by ``parse_args`` and run."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--render"]:
        print(rerender(args[1] if len(args) > 1 else default_dir))
        return 0
    run(parse_args(argv))
    return 0
