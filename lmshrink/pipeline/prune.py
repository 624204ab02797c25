"""The block-removal flow: model + calibration text → problem → ranked candidates → (re-ranked) plan →
pruned model saved → perplexity before and after → report."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import BinaryQuadraticProblem, LmshrinkError, RemovalPlan, SolutionSet
from ..core.removal import parse_remove, removal_constraints, with_constraints
from ..report import Timings, default_out_dir, library_versions, write_json


@dataclass
class PruneResult:
    """Everything a prune run produced; ``report`` is what report.json holds."""

    out: Path
    problem: BinaryQuadraticProblem
    solutions: SolutionSet
    plan: RemovalPlan
    model: Any
    tokenizer: Any
    report: dict[str, Any] = field(default_factory=dict)


def _log(progress: bool, message: str) -> None:
    if progress:
        print(f"[lmshrink] {message}", file=sys.stderr, flush=True)


def prune(
    model: Any = None,
    *,
    remove: str | int = 6,
    kinds: list[str] | None = None,
    granularity: str = "layer",
    data: str | list[str] | None = None,
    samples: int = 64,
    seq_len: int = 128,
    objective: str = "fisher",
    objective_options: dict[str, Any] | None = None,
    solver: str = "anneal",
    solver_options: dict[str, Any] | None = None,
    top_k: int = 10,
    rerank: int = 0,
    seed: int = 0,
    out: str | Path | None = None,
    eval_tokens: int = 16384,
    eval_window: int = 512,
    evaluate: bool = True,
    save: bool = True,
    progress: bool = True,
) -> PruneResult:
    """Remove blocks from ``model`` (a name/path, None for the embedded default, or a ``LoadedModel``).

    ``remove`` is a total (``6``) or per-kind counts (``"moe=2,attention=1"``); ``kinds`` limits a total to some
    block kinds. Writes ``model/``, ``problem.json``, ``report.json`` and ``report.md`` under ``out``.
    """
    import torch

    from ..data import evaluation_ids, load_texts, make_calibration
    from ..evaluate.loss import calibration_loss
    from ..evaluate.perplexity import perplexity
    from ..models import LoadedModel, load_model
    from ..plugins import find_adapter, get_objective, get_solver

    spec = parse_remove(remove)
    timings = Timings()
    out = Path(out) if out is not None else default_out_dir()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    # resolve plugins before the slow steps, so a typo fails at once
    objective_plugin = get_objective(objective)
    solver_plugin = get_solver(solver, BinaryQuadraticProblem)
    obj_opts = dict(objective_options or {})
    if "granularity" in objective_plugin.options:
        obj_opts.setdefault("granularity", granularity)
    if "progress" in objective_plugin.options:
        obj_opts.setdefault("progress", progress)

    with timings("load model"):
        _log(progress, "loading model" + (f" {model}" if isinstance(model, str) else " (embedded default)" if model is None else ""))
        loaded = model if isinstance(model, LoadedModel) else load_model(model)
        net, tokenizer = loaded.model, loaded.tokenizer
        net.eval()
        adapter = find_adapter(net)
        blocks = adapter.blocks(net, granularity)
    with timings("data"):
        texts = load_texts(data)
        calibration = make_calibration(tokenizer, texts, samples, seq_len, seed)
    constraints = removal_constraints(blocks, spec, kinds)
    _log(progress, f"{type(net).__name__}: {len(blocks)} blocks ({granularity}); adapter {adapter.name}; "
                   f"calibration {calibration.num_samples}×{calibration.seq_len} tokens from {texts.source}")

    with timings("objective"):
        _log(progress, f"building the {objective} problem")
        problem = objective_plugin.build(net, adapter, calibration, **obj_opts)
        problem = with_constraints(problem, constraints)
        problem.metadata["remove"] = {str(k) if k else "total": v for k, v in spec.items()}
        problem.save(out / "problem.json")

    with timings("solve"):
        _log(progress, f"solving with {solver}")
        solutions = solver_plugin.solve(problem, num_solutions=max(top_k, rerank, 1), seed=seed,
                                        **(solver_options or {}))

    candidates = [{"rank": r, "indices": list(s.indices), "blocks": [blocks[i].name for i in s.indices],
                   "energy": s.energy, "loss": None} for r, s in enumerate(solutions, 1)]
    chosen = 0
    if rerank > 0:
        with timings("rerank"):
            for cand in _progress(candidates[:rerank], progress, "re-ranking by calibration loss"):
                cand["loss"] = calibration_loss(net, calibration.input_ids, adapter=adapter,
                                                removed=cand["indices"], granularity=granularity)
            chosen = min(range(min(rerank, len(candidates))), key=lambda k: candidates[k]["loss"])
    best = solutions[chosen]
    plan = RemovalPlan([blocks[i] for i in best.indices], granularity, best.energy, candidates[chosen]["loss"],
                       {"candidate_rank": chosen + 1})

    eval_ids = evaluation_ids(tokenizer, texts, eval_tokens) if evaluate else None
    ppl_before = ppl_after = None
    params_before = sum(p.numel() for p in net.parameters())
    if evaluate:
        with timings("perplexity before"):
            ppl_before = perplexity(net, eval_ids, window=eval_window, progress=progress, desc="perplexity before")
    save_format = adapter.save_format(net, plan.indices, granularity)
    with timings("remove"):
        net = adapter.remove(net, plan.indices, granularity)
    params_after = sum(p.numel() for p in net.parameters())
    if evaluate:
        with timings("perplexity after"):
            ppl_after = perplexity(net, eval_ids, window=eval_window, progress=progress, desc="perplexity after")
    if save:
        with timings("save"):
            _save_model(net, tokenizer, out / "model", save_format, plan)

    report = {
        "command": "prune",
        "model": loaded.name,
        "architecture": type(net).__name__,
        "adapter": adapter.name,
        "granularity": granularity,
        "num_blocks": len(blocks),
        "removed": [b.to_dict() for b in plan.blocks],
        "plan": plan.to_dict(),
        "candidates": candidates,
        "reranked": rerank > 0,
        "perplexity_before": ppl_before,
        "perplexity_after": ppl_after,
        "parameters_before": params_before,
        "parameters_after": params_after,
        "saved_format": save_format if save else None,
        "saved_format_reason": _format_reason(save_format),
        "problem": {"path": "problem.json", "variables": problem.num_variables,
                    "constraints": [c.to_dict() | {"size": len(c.indices)} for c in problem.constraints]},
        "solver": {"name": solutions.solver, "time_s": solutions.time_s, "info": solutions.info},
        "settings": {"remove": str(remove), "kinds": kinds, "granularity": granularity, "data": data,
                     "samples": samples, "seq_len": seq_len, "objective": objective, "objective_options": obj_opts,
                     "solver": solver, "solver_options": solver_options or {}, "top_k": top_k, "rerank": rerank,
                     "seed": seed, "eval_tokens": eval_tokens, "eval_window": eval_window},
        "calibration": {"source": texts.source, **calibration.info},
        "timings_s": dict(timings.seconds),
        "versions": library_versions(),
    }
    write_json(out / "report.json", report)
    (out / "report.md").write_text(render_markdown(report))
    _log(progress, f"done in {timings.total:.1f} s; wrote {out}")
    return PruneResult(out, problem, solutions, plan, net, tokenizer, report)


def _progress(items: list, progress: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, disable=not progress, leave=False)


def _format_reason(save_format: str) -> str:
    if save_format == "transformers":
        return "every removed unit is a whole block the architecture's config can express"
    return "a removed unit is part of a layer, which the stock config cannot express"


def _save_model(model: Any, tokenizer: Any, path: Path, save_format: str, plan: RemovalPlan) -> None:
    if save_format == "transformers":
        model.save_pretrained(path)
        if tokenizer is not None:
            tokenizer.save_pretrained(path)
        return
    if save_format != "lmshrink":
        raise LmshrinkError(f"Unknown save format {save_format!r}.")
    from ..compress.io import save_compressed

    save_compressed(model, path, tokenizer=tokenizer, info={"removed": plan.to_dict()})


def render_markdown(report: dict[str, Any]) -> str:
    """The human-readable report of a prune run."""
    from ..report import markdown_table

    lines = [f"# lmshrink prune: {report['model']}", ""]
    removed = ", ".join(f"{b['index']} ({b['name']})" for b in report["removed"]) or "nothing"
    lines += [f"Removed {len(report['removed'])} of {report['num_blocks']} blocks ({report['granularity']}): "
              f"{removed}.", ""]
    before, after = report["perplexity_before"], report["perplexity_after"]
    if before and after:
        lines += ["## Held-out perplexity", "",
                  markdown_table(["", "perplexity", "tokens", "parameters"],
                                 [["before", before["perplexity"], before["tokens"], report["parameters_before"]],
                                  ["after", after["perplexity"], after["tokens"], report["parameters_after"]]]), ""]
    lines += ["## Candidates", "", f"Solver `{report['solver']['name']}` in {report['solver']['time_s']:.3f} s; "
              + ("re-ranked by measured calibration loss." if report["reranked"] else "ranked by energy."), ""]
    rows = [[c["rank"], ", ".join(map(str, c["indices"])), c["energy"], c["loss"]] for c in report["candidates"]]
    lines += [markdown_table(["rank", "removed blocks", "energy", "calibration loss"], rows), ""]
    lines += ["## Timings", "", markdown_table(["stage", "seconds"], [[k, v] for k, v in report["timings_s"].items()]),
              ""]
    fmt = report.get("saved_format")
    if fmt:
        lines += [f"Model saved in `{fmt}` format under `model/` ({report['saved_format_reason']}).", ""]
    lines += ["## Settings", "", "```json", json.dumps(report["settings"], indent=1, default=str), "```",
              "", "## Versions", "", ", ".join(f"{k} {v}" for k, v in report["versions"].items()), ""]
    return "\n".join(lines)
