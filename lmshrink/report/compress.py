"""report.md of a compress run and the summary ``lmshrink compress`` prints, rendered from its record
(:class:`~lmshrink.report.schema.CompressReport`)."""

from __future__ import annotations

from . import other_text_lines, other_texts_section, perplexity_change
from .schema import CompressReport


def render_compress_markdown(report: CompressReport) -> str:
    """A short human-readable report.md."""
    p = report.params
    lines = [f"# lmshrink compress (ratio {report.settings['ratio']}, mode {report.settings['mode']})", "",
             f"Kept {p['kept']:,} of {p['dense']:,} parameters of the decomposed decoder matrices "
             f"({p['kept_ratio']:.4f}; budget {p['budget']:,.0f}).", "",
             f"Removed branches ({len(report.removed_branches)}): "
             + (", ".join(report.removed_branches) or "none"), "",
             f"Factored matrices: {len(report.factored)}; kept dense: {len(report.dense_matrices)}.", "",
             f"Estimated calibration-loss increase (surrogate): {report.estimated_loss_increase:.4f} nats/token."]
    if report.perplexity_before:
        lines += ["", f"Held-out perplexity {report.perplexity_before['perplexity']:.3f} → "
                      f"{report.perplexity_after['perplexity']:.3f}."]
    if report.verify:
        lines += ["", f"Reload check: max |Δlogit| {report.verify['max_abs_logit_diff']:.3g}."]
    if report.other_texts:
        lines += [""] + other_texts_section(report.other_texts)[:-1]
    lines += ["", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in report.timings_s.items()]
    return "\n".join(lines) + "\n"


def compress_summary(report: CompressReport) -> list[str]:
    """What ``lmshrink compress`` prints on stdout: the parameters kept, the branches removed and the matrices
    factored, and the held-out perplexity before and after."""
    p = report.params
    lines = [f"kept {p['kept']:,} of {p['dense']:,} decomposed decoder parameters ({p['kept_ratio']:.4f}); removed "
             f"{len(report.removed_branches)} branches, factored {len(report.factored)} matrices"]
    if report.perplexity_before:
        lines.append(perplexity_change(report.perplexity_before, report.perplexity_after))
    lines += other_text_lines(report.other_texts, "")
    return lines
