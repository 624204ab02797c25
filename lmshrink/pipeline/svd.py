"""The SVD flow: model + calibration text → whitened SVDs → rank-allocation problem → ranks → low-rank (or
PivGa) model saved → perplexity before and after → report.

The decomposed matrices are the adapter's :meth:`~lmshrink.core.ArchitectureAdapter.linear_layers` (q, k, v, o,
gate, up, down of every Llama block); ``ratio`` is the fraction of *their* parameters the compressed model keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import LmshrinkError, SolutionSet
from ..core.rank import RankAllocationProblem
from ..report import Timings, default_out_dir, library_versions, markdown_table, write_json
from ..report import log as _log
from .inputs import load_inputs


@dataclass
class SvdResult:
    """Everything an SVD run produced; ``report`` is what report.json holds."""

    out: Path | None
    problem: RankAllocationProblem
    solutions: SolutionSet
    ranks: dict[str, int]
    model: Any
    tokenizer: Any
    report: dict[str, Any] = field(default_factory=dict)


def svd_compress(
    model: Any = None,
    *,
    ratio: float = 0.8,
    solver: str = "fermigrad",
    pivga: bool = False,
    data: str | list[str] | None = None,
    samples: int = 64,
    seq_len: int = 256,
    seed: int = 0,
    out: str | Path | None = None,
    solver_options: dict[str, Any] | None = None,
    objective_options: dict[str, Any] | None = None,
    time_limit: float | None = None,
    eval_tokens: int = 16384,
    eval_window: int = 512,
    evaluate: bool = True,
    save: bool = True,
    export_dense: bool = False,
    verify: bool = True,
    progress: bool = True,
) -> SvdResult:
    """Compress ``model`` (a name/path, None for the embedded default, or a ``LoadedModel``) by whitened SVD.

    ``solver`` picks the rank allocation (``fermigrad``, ``milp``, ``uniform`` or any solver of
    :class:`~lmshrink.core.RankAllocationProblem`); ``pivga`` stores the factors gauge-fixed, so the same budget
    buys higher ranks. ``objective_options`` go to the ``fermi-rank`` objective (``target``, ``batch_size``,
    ``normalize``, ``eps``, ...). Writes ``model/`` (reload with :func:`lmshrink.load_compressed`),
    ``problem.json``, ``report.json``, ``report.md`` and, with ``export_dense``, ``dense/`` (a plain transformers
    model) under ``out``. ``verify`` reloads the saved model and records the largest logit difference.
    """
    import torch

    from ..compress.svd import compress_model
    from ..data import evaluation_ids
    from ..evaluate.perplexity import perplexity
    from ..objectives.fermi_rank import FermiRankObjective
    from ..plugins import get_solver

    if not 0 < ratio <= 1:
        raise LmshrinkError(f"ratio must be in (0, 1], not {ratio}.")
    timings = Timings()
    out = Path(out) if out is not None else (default_out_dir() if save else None)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    objective = FermiRankObjective()
    obj_opts = {"oracle": solver == "fermigrad", **(objective_options or {})}
    obj_opts.update(ratio=ratio, pivga=pivga, seed=seed, progress=progress)
    from ..core.options import validate_options

    validate_options(f"Objective {objective.name!r}", objective.options, obj_opts)  # typos fail before loading
    solver_plugin = get_solver(solver, RankAllocationProblem)

    inputs = load_inputs(model, data=data, samples=samples, seq_len=seq_len, seed=seed, timings=timings,
                         progress=progress)
    loaded, net, tokenizer, adapter = inputs.loaded, inputs.model, inputs.tokenizer, inputs.adapter
    texts, calibration = inputs.texts, inputs.calibration
    eval_ids = evaluation_ids(tokenizer, texts, eval_tokens) if evaluate else None
    params_before = sum(p.numel() for p in net.parameters())
    _log(progress, f"{type(net).__name__}: {len(adapter.linear_layers(net))} matrices to decompose; calibration "
                   f"{calibration.num_samples}×{calibration.seq_len} tokens from {texts.source}")

    ppl_before = ppl_after = None
    if evaluate:
        with timings("perplexity before"):
            ppl_before = perplexity(net, eval_ids, window=eval_window, progress=progress, desc="perplexity before")
    with timings("whitening + SVD"):
        _log(progress, "collecting whitening statistics and computing whitened SVDs")
        problem = objective.build(net, adapter, calibration, **obj_opts)
        factors = objective.factors
    if out is not None:
        problem.save(out / "problem.json")
    with timings("solve"):
        _log(progress, f"allocating ranks with {solver} (budget {problem.budget:,.0f} of {problem.total_dense:,})")
        sopts = dict(solver_options or {})
        if "progress" in solver_plugin.options:
            sopts.setdefault("progress", progress)
        solutions = solver_plugin.solve(problem, seed=seed, time_limit=time_limit, **sopts)
    problem.loss = None  # the oracle holds the model and the factors; not needed any more
    best = solutions.best
    ranks = {name: int(r) for name, r in zip(problem.names, best.x)}
    with timings("compress"):
        summary = compress_model(net, factors, ranks, pivga=pivga)
    del factors, objective
    params_after = sum(p.numel() for p in net.parameters())
    if evaluate:
        with timings("perplexity after"):
            ppl_after = perplexity(net, eval_ids, window=eval_window, progress=progress, desc="perplexity after")

    verified = None
    if save and out is not None:
        from ..compress.io import load_compressed, save_compressed

        with timings("save"):
            info = {"command": "svd", "ratio": ratio, "solver": solver, "pivga": pivga, "ranks": ranks}
            save_compressed(net, out / "model", tokenizer=tokenizer, info=info)
            if export_dense:
                from ..compress.svd import export_dense as _export_dense

                _export_dense(net, out / "dense", tokenizer)
        if verify:
            with timings("verify reload"):
                reloaded = load_compressed(out / "model")
                probe = calibration.input_ids[:2, : min(64, calibration.seq_len)]
                with torch.no_grad():
                    a = net(input_ids=probe, use_cache=False).logits
                    b = reloaded(input_ids=probe, use_cache=False).logits
                verified = {"max_abs_logit_diff": float((a - b).abs().max()), "identical": bool(torch.equal(a, b))}
                del reloaded

    per_matrix = []
    for l, name in enumerate(problem.names):
        m, n = problem.shapes[l]
        r = ranks[name]
        per_matrix.append({
            "name": name, "shape": [m, n], "rank": r, "max_rank": min(m, n), "kind": summary.kinds[name],
            "params_dense": m * n,
            "params_plain": m * n if summary.kinds[name] == "dense" else min(r * (m + n), m * n),
            "params_pivga": m * n if summary.kinds[name] == "dense" else r * (m + n) - r * r,
            "truncation_error": float(problem.tail_table(l)[r]),
            "relative_error": float(problem.tail_table(l)[r] / max(problem.tail_table(l)[0], 1e-300))
            if not problem.is_dense(l, r) else 0.0,
        })
    report = {
        "command": "svd",
        "model": loaded.name,
        "architecture": type(net).__name__,
        "adapter": adapter.name,
        "ratio": ratio,
        "solver": {"name": solutions.solver, "time_s": solutions.time_s, "energy": best.energy,
                   "info": solutions.info},
        "pivga": pivga,
        "params": {
            "decomposed_dense": problem.total_dense,
            "budget": problem.budget,
            "kept_plain": summary.params_plain,
            "kept_pivga": summary.params_pivga,
            "kept_stored": summary.params_stored,
            "kept_ratio_plain": summary.params_plain / problem.total_dense,
            "kept_ratio_pivga": summary.params_pivga / problem.total_dense,
            "kept_ratio_stored": summary.params_stored / problem.total_dense,
            "dense_matrices": sorted(k for k, v in summary.kinds.items() if v == "dense"),
            "model_before": params_before,
            "model_after": params_after,
        },
        "perplexity_before": ppl_before,
        "perplexity_after": ppl_after,
        "energy": best.energy,
        "whitening": problem.metadata.get("whitening", {}),
        "verify": verified,
        "problem": {"path": "problem.json", "matrices": problem.num_matrices, "format": problem.FORMAT},
        "per_matrix": per_matrix,
        "settings": {"ratio": ratio, "solver": solver, "solver_options": solver_options or {}, "pivga": pivga,
                     "data": data, "samples": samples, "seq_len": seq_len, "seed": seed,
                     "objective": "fermi-rank", "objective_options": {k: v for k, v in obj_opts.items()},
                     "eval_tokens": eval_tokens, "eval_window": eval_window, "export_dense": export_dense,
                     "time_limit": time_limit},
        "calibration": {"source": texts.source, **calibration.info},
        "timings_s": dict(timings.seconds),
        "versions": library_versions(),
    }
    if out is not None:
        write_json(out / "report.json", report)
        (out / "report.md").write_text(render_markdown(report))
    _log(progress, f"done in {timings.total:.1f} s" + (f"; wrote {out}" if out is not None else ""))
    return SvdResult(out, problem, solutions, ranks, net, tokenizer, report)


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
