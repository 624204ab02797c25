"""The block-removal flow as a short composition of named stages:

check the request (:mod:`.request`) → load inputs (:mod:`.inputs`) → removal target (:mod:`.target`) →
candidates (:mod:`.candidates`: objective + solver, or a removal method) → select (:mod:`.select`: optional
re-rank by measured loss) → perplexity before → remove → save (:mod:`.outputs`) → evaluate the pruned model
(:mod:`.evaluation`) → report (Markdown in :mod:`lmshrink.report.prune`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import BinaryQuadraticProblem, RemovalPlan, SolutionSet
from ..report import Timings, library_versions
from ..report import log as _log
from .candidates import Candidate, Proposal
from .config import PruneConfig
from .evaluation import Evaluation, evaluate_pruned, held_out_ids, perplexity_before
from .inputs import Inputs, load_inputs
from .outputs import format_reason, save_outputs, write_report
from .request import PruneRequest, prepare
from .select import mark_unrunnable, select
from .target import Target, removal_target

__all__ = ["PruneConfig", "PruneResult", "prune"]


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


def prune(model: Any = None, config: PruneConfig | None = None, **settings: Any) -> PruneResult:
    """Remove blocks from ``model`` (a name/path, None for the embedded default, or a ``LoadedModel``).

    Settings come as a :class:`PruneConfig` or as its fields by keyword (``prune(remove=6, solver="exact")``).
    Writes ``model/``, ``problem.json`` (not with a removal method), ``report.json`` and ``report.md`` under
    ``out``. Every setting is checked before the model loads; the model is saved before it is evaluated, and an
    evaluation that fails is recorded in the report (``report["errors"]``).
    """
    import torch

    config = PruneConfig.from_settings(config, **settings)
    request = prepare(config, model)
    timings, progress = Timings(), config.progress
    torch.manual_seed(config.seed)
    inputs = load_inputs(model, data=config.data, samples=config.samples, seq_len=config.seq_len, seed=config.seed,
                         timings=timings, progress=progress)
    net, adapter = inputs.model, inputs.adapter
    target = removal_target(adapter, net, request.spec, config.granularity, config.kinds)
    eval_ids = held_out_ids(inputs.tokenizer, inputs.texts, config.eval_tokens) if config.evaluate else None
    _log(progress, f"{type(net).__name__}: {len(target.blocks)} blocks ({config.granularity}); adapter "
                   f"{adapter.name}; calibration {inputs.calibration.num_samples}×{inputs.calibration.seq_len} "
                   f"tokens from {inputs.texts.source}")

    proposal = request.source.propose(inputs, target, count=config.num_candidates, seed=config.seed,
                                      timings=timings, progress=progress)
    plan = _select(proposal.candidates, inputs, target, config, timings)
    before = None
    if eval_ids is not None:
        with timings("perplexity before"):
            before = perplexity_before(net, eval_ids, window=config.eval_window, progress=progress, adapter=adapter,
                                       granularity=config.granularity)
    params_before = sum(p.numel() for p in net.parameters())
    save_format = adapter.save_format(net, plan.indices, config.granularity)
    with timings("remove"):
        net = adapter.remove(net, plan.indices, config.granularity)
    # a heal stage (e.g. a linear map folded into the weights) would go here, between remove and save

    def report(evaluation: Evaluation | None) -> dict[str, Any]:
        return build_report(request, inputs, target, proposal, plan, before, evaluation, timings,
                            parameters=(params_before, sum(p.numel() for p in net.parameters())),
                            save_format=save_format, saved=config.save)

    pending = eval_ids is not None or bool(request.eval_tasks)
    with timings("save"):
        out = save_outputs(request.out, overwrite=config.overwrite, model=net if config.save else None,
                           tokenizer=inputs.tokenizer, save_format=save_format, plan=plan, problem=proposal.problem,
                           report=report(None if pending else Evaluation()))
    evaluation = _evaluate(net, inputs.tokenizer, eval_ids, request, timings, lambda e: write_report(out, report(e)))
    final = report(evaluation)
    write_report(out, final)
    _log(progress, f"done in {timings.total:.1f} s; wrote {out}")
    return PruneResult(out, proposal.problem, proposal.solutions, plan, net, inputs.tokenizer, final)


def _select(candidates: list[Candidate], inputs: Inputs, target: Target, config: PruneConfig,
            timings: Timings) -> RemovalPlan:
    """Set aside candidates the architecture cannot run; pick one, re-ranked by calibration loss with ``rerank``;
    the plan that removes its blocks."""
    from ..evaluate.loss import calibration_loss

    runnable = mark_unrunnable(inputs.adapter, inputs.model, candidates, config.granularity)
    _log(config.progress and len(runnable) < len(candidates),
         f"skipped {len(candidates) - len(runnable)} candidate(s) the architecture cannot run (see report)")

    def measure(cand: Candidate) -> float:
        with timings("rerank"):
            return calibration_loss(inputs.model, inputs.calibration.input_ids, adapter=inputs.adapter,
                                    removed=cand.indices, granularity=config.granularity)

    chosen = select(runnable, config.rerank, measure, progress=config.progress)
    return RemovalPlan([target.blocks[i] for i in chosen.indices], config.granularity, chosen.energy, chosen.loss,
                       {"candidate_rank": chosen.rank, **({"method": config.method} if config.method else {})})


def _evaluate(net: Any, tokenizer: Any, eval_ids: Any, request: PruneRequest, timings: Timings,
              record: Callable[[Evaluation], None]) -> Evaluation:
    """Evaluate the saved pruned model; on Ctrl-C the report says the evaluation was interrupted."""
    config = request.config
    try:
        return evaluate_pruned(net, tokenizer, eval_ids, window=config.eval_window, eval_tasks=request.eval_tasks,
                               eval_limit=config.eval_limit, seed=config.seed, timings=timings,
                               progress=config.progress)
    except KeyboardInterrupt:
        record(Evaluation(errors=[{"stage": "evaluation", "error": "interrupted; the pruned model is saved"}],
                          finished=False))
        raise


def build_report(request: PruneRequest, inputs: Inputs, target: Target, proposal: Proposal, plan: RemovalPlan,
                 before: dict[str, float] | None, evaluation: Evaluation | None, timings: Timings, *,
                 parameters: tuple[int, int], save_format: str, saved: bool) -> dict[str, Any]:
    """What report.json holds. ``status`` is "evaluating" while the saved model is evaluated (``evaluation``
    None), "complete" after, "interrupted" when the evaluation was cut short."""
    config, problem = request.config, proposal.problem
    settings = config.settings()
    settings.update(eval_tasks=request.eval_tasks, objective_options=getattr(request.source, "objective_options",
                                                                             config.objective_options))
    return {
        "command": "prune",
        "status": "evaluating" if evaluation is None else "complete" if evaluation.finished else "interrupted",
        "errors": evaluation.errors if evaluation is not None else [],
        "model": inputs.loaded.name,
        "architecture": type(inputs.model).__name__,
        "adapter": inputs.adapter.name,
        "granularity": config.granularity,
        "num_blocks": len(target.blocks),
        "removed": [b.to_dict() for b in plan.blocks],
        "plan": plan.to_dict(),
        "candidates": [c.to_dict() for c in proposal.candidates],
        "reranked": config.rerank > 0,
        "perplexity_before": before,
        "perplexity_after": evaluation.perplexity if evaluation is not None else None,
        "parameters_before": parameters[0],
        "parameters_after": parameters[1],
        "saved_format": save_format if saved else None,
        "saved_format_reason": format_reason(save_format),
        "problem": {"path": "problem.json", "variables": problem.num_variables,
                    "constraints": [c.to_dict() | {"size": len(c.indices)} for c in problem.constraints]}
        if problem is not None else None,
        "solver": proposal.facts.get("solver"),
        "method": proposal.facts.get("method"),
        "lm_eval": evaluation.lm_eval if evaluation is not None else None,
        "settings": settings,
        "calibration": {"source": inputs.texts.source, **inputs.calibration.info},
        "timings_s": dict(timings.seconds),
        "versions": library_versions(),
    }
