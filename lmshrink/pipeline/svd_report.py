"""The record of an svd run: report.json (every figure and setting) and report.md (the same, for people; rendered
by :mod:`lmshrink.report.svd`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..report import Timings, library_versions, write_json
from ..report.schema import HealingSummary, SvdReport
from ..report.svd import render_svd_markdown
from ..staging import atomic_write_text

#: settings of :class:`~lmshrink.pipeline.svd.SvdConfig` the report lists (where and how the run wrote are left out)
_SETTINGS = ("ratio", "solver", "solver_options", "pivga", "data", "samples", "seq_len", "seed", "objective",
             "objective_options", "eval_tokens", "eval_window", "export_dense", "time_limit", "whitening", "update")


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
               ppl_after: dict[str, Any] | None, timings: Timings,
               precision: dict[str, Any] | None = None, healing: HealingSummary | None = None,
               model_source: str | None = None) -> SvdReport:
    """The run's record, built once the model is compressed (the save adds the reload check, ``verify``, and the
    save's timings); ``precision`` (device, dtype, device map, saved dtype as run) goes into ``settings``;
    ``healing`` is what KD healing did (with ``ppl_after`` measured after it); ``model_source`` the model as given."""
    net, calibration = inputs.model, inputs.calibration
    best = solutions.best
    total = problem.total_dense
    settings = {k: getattr(config, k) for k in _SETTINGS}
    settings["objective_options"] = dict(plugins.objective_options)
    settings.update(precision or {})
    return SvdReport(
        model=inputs.loaded.name,
        model_source=model_source,
        architecture=type(net).__name__,
        adapter=inputs.adapter.name,
        ratio=config.ratio,
        solver={"name": solutions.solver, "time_s": solutions.time_s, "energy": best.energy, "info": solutions.info},
        pivga=config.pivga,
        params={
            "decomposed_dense": total,
            "budget": problem.budget,
            "kept_plain": summary.params_plain,
            "kept_pivga": summary.params_pivga,
            "kept_stored": summary.params_stored,
            "kept_ratio_plain": summary.params_plain / total,
            "kept_ratio_pivga": summary.params_pivga / total,
            "kept_ratio_stored": summary.params_stored / total,
            "dense_matrices": sorted(m.name for m in plan.matrices if m.dense),
            "dense_for_speed": sorted(summary.dense_for_speed),
            "model_before": params_before,
            "model_after": params_after,
        },
        perplexity_before=ppl_before,
        perplexity_after=ppl_after,
        energy=best.energy,
        whitening={**problem.metadata.get("whitening", {}), "mode": getattr(config, "whitening", "dense"),
                   "update": getattr(config, "update", "none")},
        problem={"path": "problem.json", "matrices": problem.num_matrices, "format": problem.FORMAT},
        plan={"path": "plan.json", "format": plan.FORMAT, "cost": plan.cost, "budget": plan.budget},
        per_matrix=per_matrix(problem, plan),
        settings=settings,
        calibration={"source": inputs.texts.source, **calibration.info},
        timings_s=dict(timings.seconds),
        versions=library_versions(),
        healing=healing,
    )


def write_report(out: Path, report: SvdReport) -> None:
    """report.json and report.md under ``out``, each replaced atomically."""
    write_json(out / "report.json", report.to_json())
    atomic_write_text(out / "report.md", render_svd_markdown(report))


__all__ = ["per_matrix", "svd_report", "write_report"]
