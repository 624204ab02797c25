"""The record of an svd run: report.json (every figure and setting) and report.md (the same, for people)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..report import Timings, library_versions, markdown_table, write_json

#: settings of :class:`~lmshrink.pipeline.svd.SvdConfig` the report lists (where and how the run wrote are left out)
_SETTINGS = ("ratio", "solver", "solver_options", "pivga", "data", "samples", "seq_len", "seed", "objective",
             "objective_options", "eval_tokens", "eval_window", "export_dense", "time_limit")


def per_matrix(problem: Any, plan: Any) -> list[dict[str, Any]]:
    """Per matrix of the plan: shape, rank, kind, the numbers it keeps (plain and PivGa) and its truncation error."""
    rows = []
    for l, m in enumerate(plan.matrices):
        rows_, cols = m.shape
        r, kind = m.rank, plan.kind(m)
        tail = problem.tail_table(l)
        rows.append({
            "name": m.name, "shape": [rows_, cols], "rank": r, "max_rank": m.max_rank, "kind": kind,
            "params_dense": rows_ * cols,
            "params_plain": rows_ * cols if m.dense else min(r * (rows_ + cols), rows_ * cols),
            "params_pivga": rows_ * cols if m.dense else r * (rows_ + cols) - r * r,
            "truncation_error": float(tail[r]),
            "relative_error": float(tail[r] / max(tail[0], 1e-300)) if not m.dense else 0.0,
        })
    return rows


def svd_report(inputs: Any, config: Any, plugins: Any, problem: Any, solutions: Any, plan: Any, summary: Any,
               params_before: int, params_after: int, ppl_before: dict[str, Any] | None,
               ppl_after: dict[str, Any] | None, verified: dict[str, Any] | None, timings: Timings) -> dict[str, Any]:
    """What report.json holds."""
    net, calibration = inputs.model, inputs.calibration
    best = solutions.best
    total = problem.total_dense
    settings = {k: getattr(config, k) for k in _SETTINGS}
    settings["objective_options"] = dict(plugins.objective_options)
    return {
        "command": "svd",
        "model": inputs.loaded.name,
        "architecture": type(net).__name__,
        "adapter": inputs.adapter.name,
        "ratio": config.ratio,
        "solver": {"name": solutions.solver, "time_s": solutions.time_s, "energy": best.energy,
                   "info": solutions.info},
        "pivga": config.pivga,
        "params": {
            "decomposed_dense": total,
            "budget": problem.budget,
            "kept_plain": summary.params_plain,
            "kept_pivga": summary.params_pivga,
            "kept_stored": summary.params_stored,
            "kept_ratio_plain": summary.params_plain / total,
            "kept_ratio_pivga": summary.params_pivga / total,
            "kept_ratio_stored": summary.params_stored / total,
            "dense_matrices": sorted(m.name for m in plan.matrices if m.dense),
            "model_before": params_before,
            "model_after": params_after,
        },
        "perplexity_before": ppl_before,
        "perplexity_after": ppl_after,
        "energy": best.energy,
        "whitening": problem.metadata.get("whitening", {}),
        "verify": verified,
        "problem": {"path": "problem.json", "matrices": problem.num_matrices, "format": problem.FORMAT},
        "plan": {"path": "plan.json", "format": plan.FORMAT, "cost": plan.cost, "budget": plan.budget},
        "per_matrix": per_matrix(problem, plan),
        "settings": settings,
        "calibration": {"source": inputs.texts.source, **calibration.info},
        "timings_s": dict(timings.seconds),
        "versions": library_versions(),
    }


def write_report(out: Path, report: dict[str, Any]) -> None:
    """report.json and report.md under ``out``."""
    write_json(out / "report.json", report)
    (out / "report.md").write_text(render_markdown(report))


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: settings, parameters, perplexity, timings and the per-matrix ranks."""
    p = report["params"]
    s = report["settings"]
    lines = [
        f"# lmshrink svd: {report['model']}",
        "",
        (f"Kept {p['kept_ratio_stored']:.4f} of the {p['decomposed_dense']:,} parameters of the "
         f"{len(report['per_matrix'])} decomposed matrices (target ratio {report['ratio']}), ranks chosen by "
         f"**{report['solver']['name']}**{' with PivGa' if report['pivga'] else ''}."),
        "",
        "## Parameters",
        "",
        markdown_table(
            ["", "numbers", "ratio"],
            [
                ["decomposed matrices, dense", f"{p['decomposed_dense']:,}", 1.0],
                ["budget", f"{p['budget']:,.0f}", p["budget"] / p["decomposed_dense"]],
                ["kept as plain low-rank factors", f"{p['kept_plain']:,}", p["kept_ratio_plain"]],
                ["kept with PivGa", f"{p['kept_pivga']:,}", p["kept_ratio_pivga"]],
                ["stored", f"{p['kept_stored']:,}", p["kept_ratio_stored"]],
                ["whole model before", f"{p['model_before']:,}", ""],
                ["whole model after", f"{p['model_after']:,}", p["model_after"] / p["model_before"]],
            ],
        ),
        "",
        f"Matrices kept dense (rank at or above break-even): {len(p['dense_matrices'])}"
        + (f" ({', '.join(p['dense_matrices'][:12])}{', …' if len(p['dense_matrices']) > 12 else ''})"
           if p["dense_matrices"] else ""),
        "",
    ]
    if report.get("perplexity_before"):
        b, a = report["perplexity_before"], report["perplexity_after"]
        lines += ["## Held-out perplexity", "",
                  markdown_table(["model", "perplexity", "nll", "tokens"],
                                 [["before", b["perplexity"], b["nll"], b["tokens"]],
                                  ["after", a["perplexity"], a["nll"], a["tokens"]]]), ""]
    w = report.get("whitening") or {}
    lines += [
        "## Settings", "",
        markdown_table(["setting", "value"], [[k, v] for k, v in s.items()]), "",
        (f"Calibration: {report['calibration'].get('source')}. Whitening: {w.get('cholesky', '?')} Cholesky, "
         f"{w.get('eigen', '?')} eigen-decomposition fallbacks over {w.get('inputs', '?')} distinct inputs "
         f"(largest relative eps {w.get('max_eps', '?')})."),
        "",
        f"Summed whitened truncation error (the problem's energy): {report['energy']:.6g}.",
        "",
    ]
    if report.get("verify"):
        v = report["verify"]
        lines += [f"Reload check: identical logits {v['identical']} (max |Δ| {v['max_abs_logit_diff']:.3g}).", ""]
    lines += ["## Timings (s)", "", markdown_table(["stage", "seconds"], [[k, v] for k, v in report["timings_s"].items()]), ""]
    lines += ["## Ranks per matrix", "",
              markdown_table(["matrix", "shape", "rank", "kind", "kept plain", "kept PivGa", "relative error"],
                             [[r["name"], f"{r['shape'][0]}×{r['shape'][1]}", r["rank"], r["kind"],
                               r["params_plain"], r["params_pivga"], r["relative_error"]]
                              for r in report["per_matrix"]]), ""]
    return "\n".join(lines)


__all__ = ["per_matrix", "render_markdown", "svd_report", "write_report"]
