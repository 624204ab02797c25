"""report.md of a prune run, rendered from its report.json dictionary."""

from __future__ import annotations

import json
from typing import Any

from ..evaluate.lm_eval import markdown as lm_eval_markdown
from . import markdown_table


def render_prune_markdown(report: dict[str, Any]) -> str:
    """The human-readable report of a prune run."""
    lines = [f"# lmshrink prune: {report['model']}", ""]
    removed = ", ".join(f"{b['index']} ({b['name']})" for b in report["removed"]) or "nothing"
    lines += [f"Removed {len(report['removed'])} of {report['num_blocks']} blocks ({report['granularity']}): "
              f"{removed}.", ""]
    lines += _budget(report)
    lines += [f"{note}" for note in report.get("notes") or []] + ([""] if report.get("notes") else [])
    lines += _status(report)
    before, after = report["perplexity_before"], report["perplexity_after"]
    if before and after:
        lines += ["## Held-out perplexity", "",
                  markdown_table(["", "perplexity", "tokens", "parameters"],
                                 [["before", before["perplexity"], before["tokens"], report["parameters_before"]],
                                  ["after", after["perplexity"], after["tokens"], report["parameters_after"]]]), ""]
    lines += _candidates(report)
    lines += _healing(report)
    if report.get("lm_eval"):
        lines += ["## lm-eval (pruned model)", "", lm_eval_markdown(report["lm_eval"]), ""]
    lines += ["## Timings", "", markdown_table(["stage", "seconds"], [[k, v] for k, v in report["timings_s"].items()]),
              ""]
    fmt = report.get("saved_format")
    if fmt:
        lines += [f"Model saved in `{fmt}` format under `model/` ({report['saved_format_reason']}).", ""]
    lines += ["## Settings", "", "```json", json.dumps(report["settings"], indent=1, default=str), "```",
              "", "## Versions", "", ", ".join(f"{k} {v}" for k, v in report["versions"].items()), ""]
    return "\n".join(lines)


def budget_sentence(budget: dict[str, Any]) -> str:
    """One sentence on what a budget in parameters removed: the parameters, their share of the decoder, the band."""
    bands = "; ".join(f"{b['name']} {b['removed']:,} in [{b['lower']:,.0f}, {b['upper']:,.0f}]"
                      for b in budget.get("bands", []))
    share = f", {budget['share_of_decoder']:.2%} of the decoder's {budget['decoder_parameters']:,}" \
        if budget.get("share_of_decoder") is not None else ""
    return (f"Removed {budget['parameters_removed']:,} parameters{share} (--remove {budget['remove']}"
            + (f"; band {bands}" if bands else "") + ").")


def _budget(report: dict[str, Any]) -> list[str]:
    budget = report.get("budget")
    return [budget_sentence(budget), ""] if budget else []


def _status(report: dict[str, Any]) -> list[str]:
    """A line for an unfinished evaluation and one per step that failed (the model is saved regardless)."""
    lines = []
    if report.get("status") == "evaluating":
        lines += ["**Evaluation of the pruned model is running (or was cut short); the model is saved.**", ""]
    for err in report.get("errors", []):
        lines += [f"**{err['stage']} failed:** {err['error']}", ""]
    return lines


def _fmt(value: Any, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _candidates(report: dict[str, Any]) -> list[str]:
    candidates = report["candidates"]
    selection = report.get("selection") or {}
    if report.get("method"):
        intro = f"Removal method `{report['method']['name']}`"
    else:
        intro = f"Solver `{report['solver']['name']}` in {report['solver']['time_s']:.3f} s"
    if selection.get("validated"):
        healed = ""
        if selection.get("heal_aware"):
            healed = (f", the {selection.get('finalists') or 'all'} lowest again after linear healing (each with its "
                      "own maps), the lowest healed loss chosen")
        intro += (f"; {selection['candidates']} candidate(s) from every source compared by loss on "
                  f"{selection['windows']} validation windows ({selection['tokens']} tokens, disjoint from the "
                  f"calibration samples){healed}; Δ is the paired difference to the chosen one.")
    else:
        intro += "; ranked by " + ("the method's own score." if report.get("method") else "energy.")
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
    info = ((report.get("method") or {}).get("selection") or {}).get("info") or {}
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


def _healing(report: dict[str, Any]) -> list[str]:
    healing = report.get("healing")
    if not healing:
        return []
    lines = ["## Healing", "", f"Steps: {', '.join(healing['steps'])}.", ""]
    unhealed, after = healing.get("perplexity_unhealed"), report.get("perplexity_after")
    if unhealed and after:
        lines += [f"Held-out perplexity after removal {unhealed['perplexity']:.3f}, after healing "
                  f"{after['perplexity']:.3f}.", ""]
    if healing.get("linear"):
        rows = [[f"{r['layers'][0]}–{r['layers'][1]}", r.get("folded_into") or "", _fmt(r.get("error_removed")),
                 _fmt(r.get("error_healed")), r.get("reason") or ""] for r in healing["linear"]]
        lines += ["Linear maps (relative error of the residual stream after each removed run, removed plainly and "
                  "healed, on the calibration samples):", "",
                  markdown_table(["removed layers", "folded into", "error removed", "error healed", "not healed"],
                                 rows), ""]
    kd = healing.get("kd")
    if kd:
        cfg = kd["config"]
        lines += [f"Distillation ({cfg['method']}, {cfg['steps']} steps, lr {cfg['lr']}, T {cfg['temperature']}): "
                  f"loss {_fmt(kd['loss_first'])} → {_fmt(kd['loss_last'])}, {kd['trained_parameters']:,} trained "
                  f"parameters, {kd['seconds']:.1f} s.", ""]
    lines += [f"**{reason}**" for reason in healing.get("reasons", [])] + ([""] if healing.get("reasons") else [])
    return lines


def render_heal_markdown(report: dict[str, Any]) -> str:
    """The human-readable report of ``lmshrink heal``."""
    kd, cfg = report["kd"], report["kd"]["config"]
    teacher = report["teacher"] if report["teacher"] is not None else "the embedded default"
    lines = [f"# lmshrink heal: {report['model']}", "",
             f"Distilled from {teacher} ({cfg['method']}, {cfg['steps']} steps × {cfg['batch_size']} windows, lr "
             f"{cfg['lr']}, T {cfg['temperature']}, seed {cfg['seed']}): loss {_fmt(kd['loss_first'])} → "
             f"{_fmt(kd['loss_last'])}, {kd['trained_parameters']:,} trained parameters.", "",
             "## Held-out perplexity", "",
             markdown_table(["", "perplexity", "tokens"],
                            [["before healing", report["perplexity_before"]["perplexity"],
                              report["perplexity_before"]["tokens"]],
                             ["after healing", report["perplexity_after"]["perplexity"],
                              report["perplexity_after"]["tokens"]]]), "",
             "## Timings", "", markdown_table(["stage", "seconds"], [[k, v] for k, v in report["timings_s"].items()]),
             "", "## Versions", "", ", ".join(f"{k} {v}" for k, v in report["versions"].items()), ""]
    return "\n".join(lines)
