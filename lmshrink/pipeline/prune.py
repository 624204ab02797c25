"""The block-removal flow: model + calibration text → problem → ranked candidates → (re-ranked) plan →
pruned model saved → perplexity before and after → report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import BinaryQuadraticProblem, LmshrinkError, RemovalPlan, SolutionSet
from ..core.removal import parse_remove, removal_constraints, with_constraints
from ..report import Timings, default_out_dir, library_versions, write_json
from ..report import log as _log
from .inputs import load_inputs


@dataclass
class PruneResult:
    """Everything a prune run produced; ``report`` is what report.json holds."""

    out: Path
    problem: BinaryQuadraticProblem | None  # None when a removal method (``method=``) chose the blocks
    solutions: SolutionSet | None
    plan: RemovalPlan
    model: Any
    tokenizer: Any
    report: dict[str, Any] = field(default_factory=dict)


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
    method: str | None = None,
    method_options: dict[str, Any] | None = None,
    eval_tasks: str | list[str] | None = None,
    eval_limit: int | float | None = None,
) -> PruneResult:
    """Remove blocks from ``model`` (a name/path, None for the embedded default, or a ``LoadedModel``).

    ``remove`` is a total (``6``) or per-kind counts (``"moe=2,attention=1"``); ``kinds`` limits a total to some
    block kinds. Writes ``model/``, ``problem.json``, ``report.json`` and ``report.md`` under ``out``.

    ``method`` (e.g. ``"sleb"``, ``"angular"``; see :mod:`lmshrink.baselines`) replaces the objective and the
    solver by a removal method that chooses the blocks itself (no problem.json then). ``eval_tasks`` runs those
    lm-eval tasks on the pruned model (``eval_limit`` examples per task) and adds the scores to the report.
    """
    import torch

    from ..data import evaluation_ids
    from ..evaluate.loss import calibration_loss
    from ..evaluate.perplexity import perplexity
    from ..plugins import get_objective, get_solver

    spec = parse_remove(remove)
    timings = Timings()
    out = Path(out) if out is not None else default_out_dir()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    # resolve plugins before the slow steps, so a typo fails at once
    objective_plugin = get_objective(objective)
    solver_plugin = get_solver(solver, BinaryQuadraticProblem)
    method_plugin, eval_tasks = _resolve_method_and_tasks(method, eval_tasks)
    obj_opts = dict(objective_options or {})
    if "granularity" in objective_plugin.options:
        obj_opts.setdefault("granularity", granularity)
    if "progress" in objective_plugin.options:
        obj_opts.setdefault("progress", progress)

    inputs = load_inputs(model, data=data, samples=samples, seq_len=seq_len, seed=seed, timings=timings,
                         progress=progress)
    loaded, net, tokenizer, adapter = inputs.loaded, inputs.model, inputs.tokenizer, inputs.adapter
    texts, calibration = inputs.texts, inputs.calibration
    blocks = adapter.blocks(net, granularity)
    constraints = removal_constraints(blocks, spec, kinds)
    _check_request(adapter, net, blocks, constraints, granularity)
    _log(progress, f"{type(net).__name__}: {len(blocks)} blocks ({granularity}); adapter {adapter.name}; "
                   f"calibration {calibration.num_samples}×{calibration.seq_len} tokens from {texts.source}")

    if method_plugin is not None:  # a removal method chooses the blocks itself: no problem, no solver
        with timings("method"):
            _log(progress, f"choosing blocks with the {method} method")
            selection = method_plugin.select(net, adapter, calibration, spec, granularity=granularity, kinds=kinds,
                                             progress=progress, **(method_options or {}))
        problem = solutions = None
        candidates = _method_candidates(selection, blocks, max(top_k, rerank, 1))
    else:
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
    valid = _mark_unrunnable(adapter, net, candidates, granularity)
    if not valid:
        raise LmshrinkError(
            f"Every one of the {len(candidates)} candidates leaves a model the architecture cannot run "
            f"({candidates[0]['error']}). Ask for more candidates with --top-k, or name per-kind counts with --remove."
        )
    _log(progress and len(valid) < len(candidates),
         f"skipped {len(candidates) - len(valid)} candidate(s) the architecture cannot run (see report)")
    chosen = valid[0]
    if rerank > 0:
        with timings("rerank"):
            measured = valid[:rerank]
            for k in _progress(measured, progress, "re-ranking by calibration loss"):
                candidates[k]["loss"] = calibration_loss(net, calibration.input_ids, adapter=adapter,
                                                         removed=candidates[k]["indices"], granularity=granularity)
            chosen = min(measured, key=lambda k: candidates[k]["loss"])
    best = candidates[chosen]
    plan = RemovalPlan([blocks[i] for i in best["indices"]], granularity, best["energy"], best["loss"],
                       {"candidate_rank": chosen + 1, **({"method": method} if method_plugin else {})})

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
    lm_eval_result = None
    if eval_tasks:
        with timings("lm-eval"):
            from ..evaluate.lm_eval import run_lm_eval

            _log(progress, f"lm-eval on the pruned model: {', '.join(eval_tasks)}")
            lm_eval_result = run_lm_eval(net, tokenizer, eval_tasks, limit=eval_limit, seed=seed)
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
                    "constraints": [c.to_dict() | {"size": len(c.indices)} for c in problem.constraints]}
        if problem is not None else None,
        "solver": {"name": solutions.solver, "time_s": solutions.time_s, "info": solutions.info}
        if solutions is not None else None,
        "method": {"name": method, "options": method_options or {}, "selection": selection.to_dict()}
        if method_plugin is not None else None,
        "lm_eval": lm_eval_result,
        "settings": {"remove": str(remove), "kinds": kinds, "granularity": granularity, "data": data,
                     "samples": samples, "seq_len": seq_len, "objective": objective, "objective_options": obj_opts,
                     "solver": solver, "solver_options": solver_options or {}, "top_k": top_k, "rerank": rerank,
                     "seed": seed, "eval_tokens": eval_tokens, "eval_window": eval_window, "method": method,
                     "method_options": method_options or {}, "eval_tasks": eval_tasks, "eval_limit": eval_limit},
        "calibration": {"source": texts.source, **calibration.info},
        "timings_s": dict(timings.seconds),
        "versions": library_versions(),
    }
    write_json(out / "report.json", report)
    (out / "report.md").write_text(render_markdown(report))
    _log(progress, f"done in {timings.total:.1f} s; wrote {out}")
    return PruneResult(out, problem, solutions, plan, net, tokenizer, report)


# --- removal methods and lm-eval (lmshrink.baselines, lmshrink.evaluate.lm_eval) ------------------------------
def _resolve_method_and_tasks(method: str | None, eval_tasks: Any) -> tuple[Any, list[str] | None]:
    """The removal-method plugin (None without ``method``) and the parsed lm-eval task list, checked early."""
    plugin = None
    if method is not None:
        from ..baselines import get_method

        plugin = get_method(method)
    if eval_tasks:
        from ..evaluate.lm_eval import parse_tasks

        eval_tasks = parse_tasks(eval_tasks)
    return plugin, eval_tasks or None


def _check_request(adapter: Any, net: Any, blocks: list, constraints: list, granularity: str) -> None:
    """Refuse before any slow step a request that no choice of blocks can satisfy, e.g. removing every attention
    block of a hybrid model. Within a group every choice has the same kinds, so the first blocks stand for all."""
    kinds_by_group = [{blocks[i].kind for i in c.indices} for c in constraints if c.equals > 0]
    if any(len(k) > 1 for k in kinds_by_group):
        return  # a total over several kinds: some choices may be runnable; candidates are checked one by one
    representative = [i for c in constraints if c.equals > 0 for i in c.indices[: c.equals]]
    reason = adapter.removal_error(net, representative, granularity) if representative else None
    if reason:
        raise LmshrinkError(reason)


def _mark_unrunnable(adapter: Any, net: Any, candidates: list[dict[str, Any]], granularity: str) -> list[int]:
    """Set ``error`` on each candidate the architecture cannot run; the positions of the others, in order."""
    valid = []
    for k, cand in enumerate(candidates):
        cand["error"] = adapter.removal_error(net, cand["indices"], granularity)
        if cand["error"] is None:
            valid.append(k)
    return valid


def _method_candidates(selection: Any, blocks: list, limit: int) -> list[dict[str, Any]]:
    scores = selection.scores or [None] * len(selection.candidates)
    return [{"rank": r, "indices": list(c), "blocks": [blocks[i].name for i in c], "energy": None, "score": sc,
             "loss": None} for r, (c, sc) in enumerate(zip(selection.candidates[:limit], scores), 1)]


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
    if report.get("method"):
        lines += ["## Candidates", "", f"Removal method `{report['method']['name']}` (no problem, no solver); "
                  + ("re-ranked by measured calibration loss." if report["reranked"] else "its own ranking."), ""]
        rows = [[c["rank"], ", ".join(map(str, c["indices"])), c.get("score"), c["loss"]] for c in report["candidates"]]
        lines += [markdown_table(["rank", "removed blocks", "method score", "calibration loss"], rows), ""]
    else:
        lines += ["## Candidates", "", f"Solver `{report['solver']['name']}` in {report['solver']['time_s']:.3f} s; "
                  + ("re-ranked by measured calibration loss." if report["reranked"] else "ranked by energy."), ""]
        rows = [[c["rank"], ", ".join(map(str, c["indices"])), c["energy"], c["loss"]] for c in report["candidates"]]
        lines += [markdown_table(["rank", "removed blocks", "energy", "calibration loss"], rows), ""]
    skipped = [c for c in report["candidates"] if c.get("error")]
    if skipped:
        lines += [f"Skipped {len(skipped)} candidate(s) the architecture cannot run (ranks "
                  f"{', '.join(str(c['rank']) for c in skipped)}): {skipped[0]['error']}", ""]
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
