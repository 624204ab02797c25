"""report.md of a prune run and of a heal run, and the summary ``lmshrink prune`` prints, rendered from their
records (:class:`~lmshrink.report.schema.PruneReport`, :class:`~lmshrink.report.schema.HealReport`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..evaluate.lm_eval import markdown as lm_eval_markdown
from . import markdown_table, other_text_lines, other_texts_section, perplexity_change
from .schema import HealingSummary, HealReport, PruneReport


def render_prune_markdown(report: PruneReport | Mapping[str, Any]) -> str:
    """The human-readable report of a prune run (a report.json dictionary is read as its record)."""
    r = report if isinstance(report, PruneReport) else PruneReport.from_json(report)
    lines = [f"# lmshrink prune: {r.model}", ""]
    removed = ", ".join(f"{b['index']} ({b['name']})" for b in r.removed) or "nothing"
    lines += [f"Removed {len(r.removed)} of {r.num_blocks} blocks ({r.granularity}): {removed}.", ""]
    lines += [budget_sentence(r.budget), ""] if r.budget else []
    lines += list(r.notes) + ([""] if r.notes else [])
    lines += _status(r)
    before, after = r.perplexity_before, r.perplexity_after
    if before and after:
        lines += ["## Held-out perplexity", "",
                  markdown_table(["", "perplexity", "tokens", "parameters"],
                                 [["before", before["perplexity"], before["tokens"], r.parameters_before],
                                  ["after", after["perplexity"], after["tokens"], r.parameters_after]]), ""]
    lines += other_texts_section(r.other_texts)
    lines += _candidates(r)
    lines += healing_section(r.healing, r.perplexity_after, "removal")
    if r.lm_eval:
        lines += ["## lm-eval (pruned model)", "", lm_eval_markdown(r.lm_eval), ""]
    lines += _timings(r.timings_s)
    if r.saved_format:
        lines += [f"Model saved in `{r.saved_format}` format under `model/` ({r.saved_format_reason}).", ""]
    lines += ["## Settings", "", "```json", json.dumps(r.settings, indent=1, default=str), "```", ""]
    lines += _versions(r.versions)
    return "\n".join(lines)


def prune_summary(report: PruneReport) -> list[str]:
    """What ``lmshrink prune`` prints on stdout: the blocks removed, the budget, the perplexities (before, removed,
    healed) and the lm-eval scores."""
    removed = ", ".join(f"{b['index']}:{b['name']}" for b in report.removed)
    lines = [f"removed {len(report.removed)}/{report.num_blocks} blocks: {removed}"]
    if report.budget:
        lines.append(budget_sentence(report.budget))
    before, after = report.perplexity_before, report.perplexity_after
    if before and after:
        lines.append(healed_perplexity_change(before, after, report.healing, "removed"))
    lines += other_text_lines(report.other_texts, "removed")
    lines += [f"lm-eval {row['task']} {row['metric']}: {row['value']:.4f}"
              for row in (report.lm_eval or {}).get("scores", [])]
    return lines


def _timings(seconds: Mapping[str, float]) -> list[str]:
    return ["## Timings", "", markdown_table(["stage", "seconds"], [[k, v] for k, v in seconds.items()]), ""]


def _versions(versions: Mapping[str, str]) -> list[str]:
    return ["## Versions", "", ", ".join(f"{k} {v}" for k, v in versions.items()), ""]


def budget_sentence(budget: dict[str, Any]) -> str:
    """One sentence on what a budget in parameters removed: the parameters, their share of the decoder, the band."""
    bands = "; ".join(f"{b['name']} {b['removed']:,} in [{b['lower']:,.0f}, {b['upper']:,.0f}]"
                      for b in budget.get("bands", []))
    share = f", {budget['share_of_decoder']:.2%} of the decoder's {budget['decoder_parameters']:,}" \
        if budget.get("share_of_decoder") is not None else ""
    return (f"Removed {budget['parameters_removed']:,} parameters{share} (--remove {budget['remove']}"
            + (f"; band {bands}" if bands else "") + ").")


def _status(report: PruneReport) -> list[str]:
    """A line for an unfinished evaluation and one per step that failed (the model is saved regardless)."""
    lines = []
    if report.status == "evaluating":
        lines += ["**Evaluation of the pruned model is running (or was cut short); the model is saved.**", ""]
    for err in report.errors:
        lines += [f"**{err['stage']} failed:** {err['error']}", ""]
    return lines


def _fmt(value: Any, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _candidates(report: PruneReport) -> list[str]:
    candidates = report.candidates
    selection = report.selection or {}
    if report.method:
        intro = f"Removal method `{report.method['name']}`"
    else:
        intro = f"Solver `{report.solver['name']}` in {report.solver['time_s']:.3f} s"
    if selection.get("validated"):
        healed = ""
        if selection.get("heal_aware"):
            healed = (f", the {selection.get('finalists') or 'all'} lowest again after linear healing (each with its "
                      "own maps), the lowest healed loss chosen")
        intro += (f"; {selection['candidates']} candidate(s) from every source compared by loss on "
                  f"{selection['windows']} validation windows ({selection['tokens']} tokens, disjoint from the "
                  f"calibration samples){healed}; Δ is the paired difference to the chosen one.")
    else:
        intro += "; ranked by " + ("the method's own score." if report.method else "energy.")
    labels = sorted({k for c in candidates for k in (c.get("energies") or {})})
    unhealed = any(c.get("loss_unhealed") is not None for c in candidates)
    header = ["", "removed blocks", "sources", *(f"energy {k}" for k in labels), "score",
              *(["loss unhealed ± se"] if unhealed else []),
              "healed loss ± se" if unhealed else "validation loss ± se", "Δ ± se"]
    rows = []
    for c in candidates:
        loss = f"{c['loss']:.4f} ± {c['loss_se']:.4f}" if c.get("loss") is not None else ""
        before = [f"{c['loss_unhealed']:.4f} ± {c['loss_unhealed_se']:.4f}"
                  if c.get("loss_unhealed") is not None else ""] if unhealed else []
        delta = f"{c['delta']:+.4f} ± {c['delta_se']:.4f}" if c.get("delta") is not None and not c.get("chosen") \
            else ""
        energies = c.get("energies") or {}
        rows.append(["chosen" if c.get("chosen") else "", ", ".join(map(str, c["indices"])),
                     ", ".join(c.get("sources") or [c.get("source", "")]),
                     *(_fmt(energies.get(k), 6) for k in labels), _fmt(c.get("score")), *before, loss, delta])
    if not labels:  # a single objective: its energies are the candidates' own
        header.insert(3, "energy")
        for row, c in zip(rows, candidates):
            row.insert(3, _fmt(c.get("energy"), 6))
    lines = ["## Candidates", "", intro, "", markdown_table(header, rows), ""]
    info = ((report.method or {}).get("selection") or {}).get("info") or {}
    if info.get("tokens_spent") is not None:  # a search that counts its cost in tokens (evopress)
        lines += [f"The search spent {info['tokens_spent']:,} tokens of fitness evaluation"
                  + (f" ({info['tokens_scoring_every_child_fully']:,} had every child been scored on the last "
                     "stage's windows)" if info.get("tokens_scoring_every_child_fully") is not None else "")
                  + (f" over {info['generations_run']} generations" if "generations_run" in info else "") + ".", ""]
    if selection.get("note"):
        lines += [selection["note"], ""]
    skipped = [c for c in candidates if c.get("error")]
    if skipped:
        lines += [f"Skipped {len(skipped)} candidate(s) the architecture cannot run: {skipped[0]['error']}", ""]
    return lines


def healed_perplexity_change(before: Mapping[str, Any], after: Mapping[str, Any], healing: HealingSummary | None,
                             change: str) -> str:
    """The printed perplexity line: ``perplexity 7.390 -> 20.090 removed -> 12.180 healed (linear) on 64 held-out
    tokens`` when the model was healed (``change`` names what came before healing), else before -> after."""
    if healing is None or not healing.perplexity_unhealed:
        return perplexity_change(before, after)
    return perplexity_change(before, after, healing.perplexity_unhealed, change, healing.steps)


def healing_section(healing: HealingSummary | None, after: Mapping[str, Any] | None, change: str) -> list[str]:
    """The "Healing" section of a report.md: the steps, the held-out perplexity after ``change`` (before healing)
    and after healing (``after``), the linear maps, the distillation and why a step was skipped."""
    if healing is None:
        return []
    lines = ["## Healing", "", f"Steps: {', '.join(healing.steps)}.", ""]
    unhealed = healing.perplexity_unhealed
    if unhealed and after:
        lines += [f"Held-out perplexity after {change} {unhealed['perplexity']:.3f}, after healing "
                  f"{after['perplexity']:.3f}.", ""]
    if healing.linear:
        rows = [[f"{r['layers'][0]}–{r['layers'][1]}", r.get("folded_into") or "", _fmt(r.get("error_removed")),
                 _fmt(r.get("error_healed")), r.get("reason") or ""] for r in healing.linear]
        lines += ["Linear maps (relative error of the residual stream after each removed run, removed plainly and "
                  "healed, on the calibration samples):", "",
                  markdown_table(["removed layers", "folded into", "error removed", "error healed", "not healed"],
                                 rows), ""]
    kd = healing.kd
    if kd:
        cfg = kd["config"]
        lines += [f"Distillation ({cfg['method']}, {cfg['steps']} steps, lr {cfg['lr']}, T {cfg['temperature']}): "
                  f"loss {_fmt(kd['loss_first'])} → {_fmt(kd['loss_last'])}, {kd['trained_parameters']:,} trained "
                  f"parameters, {kd['seconds']:.1f} s.", ""]
    lines += [f"**{reason}**" for reason in healing.reasons] + ([""] if healing.reasons else [])
    return lines


def render_heal_markdown(report: HealReport | Mapping[str, Any]) -> str:
    """The human-readable report of ``lmshrink heal`` (a report.json dictionary is read as its record)."""
    r = report if isinstance(report, HealReport) else HealReport.from_json(report)
    kd, cfg = r.kd, r.kd["config"]
    teacher = r.teacher if r.teacher is not None else "the embedded default"
    before, after = r.perplexity_before, r.perplexity_after
    lines = [f"# lmshrink heal: {r.model}", "",
             f"Distilled from {teacher} ({cfg['method']}, {cfg['steps']} steps × {cfg['batch_size']} windows, lr "
             f"{cfg['lr']}, T {cfg['temperature']}, seed {cfg['seed']}): loss {_fmt(kd['loss_first'])} → "
             f"{_fmt(kd['loss_last'])}, {kd['trained_parameters']:,} trained parameters.", "",
             "## Held-out perplexity", "",
             markdown_table(["", "perplexity", "tokens"],
                            [["before healing", before["perplexity"], before["tokens"]],
                             ["after healing", after["perplexity"], after["tokens"]]]), ""]
    lines += other_texts_section(r.other_texts)
    lines += _timings(r.timings_s) + _versions(r.versions)
    return "\n".join(lines)


def heal_summary(report: HealReport) -> list[str]:
    """What ``lmshrink heal`` prints on stdout: the held-out perplexity before and after healing."""
    return [perplexity_change(report.perplexity_before, report.perplexity_after),
            *other_text_lines(report.other_texts, "")]
