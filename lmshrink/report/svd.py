"""report.md of an svd run, rendered from its record (:class:`~lmshrink.report.schema.SvdReport`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import markdown_table, other_text_lines, other_texts_section
from .prune import healed_perplexity_change, healing_section
from .schema import SvdReport


def render_svd_markdown(report: SvdReport | Mapping[str, Any]) -> str:
    """report.md: settings, parameters, perplexity, timings and the per-matrix ranks (a report.json dictionary is
    read as its record)."""
    report = report if isinstance(report, SvdReport) else SvdReport.from_json(report)
    p = report.params
    s = report.settings
    lines = [
        f"# lmshrink svd: {report.model}",
        "",
        (f"Kept {p['kept_ratio_stored']:.4f} of the {p['decomposed_dense']:,} parameters of the "
         f"{len(report.per_matrix)} decomposed matrices (target ratio {report.ratio}), ranks chosen by "
         f"**{report.solver['name']}**{' with PivGa' if report.pivga else ''}."),
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
    if p.get("dense_for_speed"):
        lines += [f"Matrices kept dense because factoring them was slower (--dense-when-slower): "
                  f"{len(p['dense_for_speed'])}.", ""]
    if report.perplexity_before:
        b, a = report.perplexity_before, report.perplexity_after
        lines += ["## Held-out perplexity", "",
                  markdown_table(["model", "perplexity", "nll", "tokens"],
                                 [["before", b["perplexity"], b["nll"], b["tokens"]],
                                  ["after", a["perplexity"], a["nll"], a["tokens"]]]), ""]
    lines += other_texts_section(report.other_texts)
    lines += healing_section(report.healing, report.perplexity_after, "compression")
    lines += trust_region_section((report.solver.get("info") or {}).get("trust_region"))
    w = report.whitening or {}
    lines += [
        "## Settings", "",
        markdown_table(["setting", "value"], [[k, v] for k, v in s.items()]), "",
        (f"Calibration: {report.calibration.get('source')}. Whitening: {w.get('mode', 'dense')}"
         + (f" (update of the kept factors: {w.get('update')})" if w.get("mode") == "sequential" else "")
         + f"; allocation on one-pass factors: {w.get('cholesky', '?')} Cholesky, "
         f"{w.get('eigen', '?')} eigen-decomposition fallbacks over {w.get('inputs', '?')} distinct inputs "
         f"(largest relative eps {w.get('max_eps', '?')})."),
        "",
        f"Summed whitened truncation error (the problem's energy): {report.energy:.6g}.",
        "",
    ]
    if report.verify:
        v = report.verify
        lines += [f"Reload check: identical logits {v['identical']} (max |Δ| {v['max_abs_logit_diff']:.3g}).", ""]
    lines += ["## Timings (s)", "", markdown_table(["stage", "seconds"], [[k, v] for k, v in report.timings_s.items()]), ""]
    lines += ["## Ranks per matrix", "",
              markdown_table(["matrix", "shape", "rank", "kind", "kept plain", "kept PivGa", "relative error"],
                             [[r["name"], f"{r['shape'][0]}×{r['shape'][1]}", r["rank"], r["kind"],
                               r["params_plain"], r["params_pivga"], r["relative_error"]]
                              for r in report.per_matrix]), ""]
    return "\n".join(lines)


def trust_region_section(rounds: Any) -> list[str]:
    """The rounds of a ``trust-region`` allocation (none for other solvers): radius, ranks moved (the curvature
    weight with ``fit_curvature``), the predicted and the measured change of the calibration loss, and whether the
    candidate was kept."""
    if not rounds:
        return []
    fitted = any("curvature_scale" in h for h in rounds)  # fit_curvature: the model's curvature weight c
    rows = [[h["round"], h.get("radius", ""), h.get("moved", ""), *([h.get("curvature_scale", "")] if fitted else []),
             h.get("predicted_change", ""), h.get("loss", ""), h.get("change", ""),
             "start" if h["round"] == 0 else ("yes" if h.get("accepted") else h.get("stopped", "no"))] for h in rounds]
    return ["## Allocation refined on the model (trust region)", "",
            markdown_table(["round", "radius", "ranks moved", *(["curvature weight"] if fitted else []),
                            "predicted change", "calibration loss", "change", "kept"], rows), ""]


def svd_summary(report: SvdReport) -> list[str]:
    """What ``lmshrink svd`` prints on stdout: the parameters kept and the held-out perplexity before and after."""
    p = report.params
    lines = [f"kept {p['kept_stored']:,} of {p['decomposed_dense']:,} decomposed parameters "
             f"({p['kept_ratio_stored']:.4f}; plain low-rank {p['kept_ratio_plain']:.4f}, PivGa "
             f"{p['kept_ratio_pivga']:.4f}); {len(p['dense_matrices'])} matrices kept dense"]
    if report.perplexity_before:
        lines.append(healed_perplexity_change(report.perplexity_before, report.perplexity_after, report.healing,
                                              "compressed"))
    lines += other_text_lines(report.other_texts, "compressed")
    return lines
