"""report.md of a prune run, rendered from its report.json dictionary."""

from __future__ import annotations

import json
from typing import Any

from . import markdown_table


def render_prune_markdown(report: dict[str, Any]) -> str:
    """The human-readable report of a prune run."""
    lines = [f"# lmshrink prune: {report['model']}", ""]
    removed = ", ".join(f"{b['index']} ({b['name']})" for b in report["removed"]) or "nothing"
    lines += [f"Removed {len(report['removed'])} of {report['num_blocks']} blocks ({report['granularity']}): "
              f"{removed}.", ""]
    lines += _status(report)
    before, after = report["perplexity_before"], report["perplexity_after"]
    if before and after:
        lines += ["## Held-out perplexity", "",
                  markdown_table(["", "perplexity", "tokens", "parameters"],
                                 [["before", before["perplexity"], before["tokens"], report["parameters_before"]],
                                  ["after", after["perplexity"], after["tokens"], report["parameters_after"]]]), ""]
    lines += _candidates(report)
    if report.get("lm_eval"):
        from ..evaluate.lm_eval import markdown as lm_eval_markdown

        lines += ["## lm-eval (pruned model)", "", lm_eval_markdown(report["lm_eval"]), ""]
    lines += ["## Timings", "", markdown_table(["stage", "seconds"], [[k, v] for k, v in report["timings_s"].items()]),
              ""]
    fmt = report.get("saved_format")
    if fmt:
        lines += [f"Model saved in `{fmt}` format under `model/` ({report['saved_format_reason']}).", ""]
    lines += ["## Settings", "", "```json", json.dumps(report["settings"], indent=1, default=str), "```",
              "", "## Versions", "", ", ".join(f"{k} {v}" for k, v in report["versions"].items()), ""]
    return "\n".join(lines)


def _status(report: dict[str, Any]) -> list[str]:
    """A line for an unfinished evaluation and one per step that failed (the model is saved regardless)."""
    lines = []
    if report.get("status") == "evaluating":
        lines += ["**Evaluation of the pruned model is running (or was cut short); the model is saved.**", ""]
    for err in report.get("errors", []):
        lines += [f"**{err['stage']} failed:** {err['error']}", ""]
    return lines


def _candidates(report: dict[str, Any]) -> list[str]:
    candidates = report["candidates"]
    how = "re-ranked by measured calibration loss." if report["reranked"] else None
    if report.get("method"):
        intro = f"Removal method `{report['method']['name']}` (no problem, no solver); " + (how or "its own ranking.")
        column, key = "method score", "score"
    else:
        intro = (f"Solver `{report['solver']['name']}` in {report['solver']['time_s']:.3f} s; "
                 + (how or "ranked by energy."))
        column, key = "energy", "energy"
    rows = [[c["rank"], ", ".join(map(str, c["indices"])), c.get(key), c["loss"]] for c in candidates]
    lines = ["## Candidates", "", intro, "", markdown_table(["rank", "removed blocks", column, "calibration loss"], rows),
             ""]
    skipped = [c for c in candidates if c.get("error")]
    if skipped:
        lines += [f"Skipped {len(skipped)} candidate(s) the architecture cannot run (ranks "
                  f"{', '.join(str(c['rank']) for c in skipped)}): {skipped[0]['error']}", ""]
    return lines
