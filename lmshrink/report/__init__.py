"""Run records: timings of each stage, library versions, writing report.json, Markdown tables. Each flow's record
is a dataclass (:mod:`.schema`: :class:`PruneReport`, :class:`SvdReport`, :class:`CompressReport`,
:class:`HealReport`), written as JSON with a schema version; its Markdown rendering lives in a module of its own
here (:mod:`.prune`, :mod:`.svd`, :mod:`.compress`), with the summary each command prints."""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from ..core.errors import LmshrinkError
from ..core.problem import json_default
from ..staging import atomic_write_text

LIBRARIES = ("lmshrink", "torch", "transformers", "numpy", "pluggy", "dimod", "dwave-samplers", "dwave-system",
             "qiskit", "qiskit-optimization", "pyomo", "highspy", "lm-eval")


def log(progress: bool, message: str) -> None:
    """A one-line progress message on stderr (``[lmshrink] ...``) unless ``progress`` is off."""
    if progress:
        print(f"[lmshrink] {message}", file=sys.stderr, flush=True)


def library_versions() -> dict[str, str]:
    """Installed versions of lmshrink and the libraries it may use (absent ones left out)."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


class Timings:
    """Wall time of named stages: ``with timings("solve"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def default_out_dir(root: str | Path = "lmshrink-out") -> Path:
    """``./lmshrink-out/<timestamp>``, made unique."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(root) / stamp
    k = 1
    while path.exists():
        k += 1
        path = Path(root) / f"{stamp}-{k}"
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as JSON through a temporary file and a rename (readers never see half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(data, indent=1, default=json_default))


def read_json(path: str | Path, what: str) -> Any:
    """The JSON in the file ``path``; a missing, unreadable or non-JSON file gets one sentence naming ``what`` it
    should be."""
    path = Path(path)
    if not path.is_file():
        raise LmshrinkError(f"No {what} at {str(path)!r}.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LmshrinkError(f"{str(path)!r} is not a readable JSON {what} ({type(exc).__name__}).") from None


def perplexity_change(before: Mapping[str, Any], after: Mapping[str, Any], unhealed: Mapping[str, Any] | None = None,
                      change: str = "", steps: Sequence[str] = ()) -> str:
    """The line a command prints for held-out perplexity before and after: ``perplexity 7.390 -> 12.180 on 64
    held-out tokens``; with the perplexity ``unhealed`` (after ``change``, before healing by ``steps``):
    ``perplexity 7.390 -> 20.090 removed -> 12.180 healed (linear) on 64 held-out tokens``."""
    values = [f"{before['perplexity']:.3f}"]
    if unhealed:
        values.append(f"{unhealed['perplexity']:.3f} {change}")
    healed = (" healed" + (f" ({', '.join(steps)})" if steps else "")) if unhealed else ""
    values.append(f"{after['perplexity']:.3f}{healed}")
    return f"perplexity {' -> '.join(values)} on {after['tokens']} held-out tokens"


def other_text_lines(scores: Mapping[str, Mapping[str, Mapping[str, Any]]] | None, change: str) -> list[str]:
    """The printed lines for held-out texts of other domains: ``literature: perplexity 39.841 -> 79.928 removed ->
    61.330 healed on 8192 held-out tokens`` (``change``: what the unhealed stage did, e.g. "removed")."""
    return [f"{name}: " + perplexity_change(stages["before"], stages["after"], stages.get("unhealed"), change)
            for name, stages in (scores or {}).items() if "before" in stages and "after" in stages]


def other_texts_section(scores: Mapping[str, Mapping[str, Mapping[str, Any]]] | None) -> list[str]:
    """The report.md section of held-out texts of other domains: one row per text, one column per stage."""
    if not scores:
        return []
    stages = [s for s in ("before", "unhealed", "after") if any(s in v for v in scores.values())]
    rows = [[name] + [v[s]["perplexity"] if s in v else "" for s in stages] + [next(iter(v.values()))["tokens"]]
            for name, v in scores.items() if v]
    return ["## Held-out perplexity on other texts", "", markdown_table(["text", *stages, "tokens"], rows), ""]


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured Markdown table; floats printed with 6 significant digits."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.6g}"
        return "" if v is None else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


from .schema import (SCHEMA_VERSION, CompressReport, HealingSummary, HealReport, PruneReport, Report,  # noqa: E402
                     SvdReport, load_report, report_from_json)
