"""The block-removal flow as a short composition of named stages:

check the request (:mod:`.request`) → load inputs (:mod:`.inputs`) → removal target (:mod:`.target`) →
candidates (:mod:`.candidates`: objective + solver, removal methods, pooled) → select (:mod:`.select`: by loss on
validation windows when several compete) → perplexity before → prepare healing (:mod:`.heal`) → remove → heal →
save (:mod:`.outputs`) → evaluate the pruned model (:mod:`.evaluation`) → report (:mod:`lmshrink.report.prune`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import BinaryQuadraticProblem, LmshrinkError, RemovalPlan, SolutionSet
from ..devices import memory_hint, placement_settings, save_dtype_of
from ..report import Timings, library_versions
from ..report.schema import HealingSummary, PruneReport
from ..report import log as _log
from ..portfolio import Portfolio
from .candidates import Proposal
from .config import PruneConfig
from .evaluation import Evaluation, OtherTexts, evaluate_pruned, held_out_ids, perplexity_before
from .inputs import Inputs, load_inputs
from .outputs import format_reason, save_outputs, write_report
from .request import PruneRequest, prepare
from .heal import HealingStage
from .select import Choice, choose_by_validation, mark_unrunnable
from .target import Target, budget_facts, removal_target

__all__ = ["PruneConfig", "PruneResult", "prune"]


@dataclass
class PruneResult:
    """Everything a prune run produced; ``report`` is the record report.json holds (its :meth:`~PruneReport.to_json`;
    it also reads as that dictionary)."""

    out: Path
    problem: BinaryQuadraticProblem | None  # None when a removal method (``method=``) chose the blocks
    solutions: SolutionSet | None
    plan: RemovalPlan
    model: Any
    tokenizer: Any
    report: PruneReport = field(default_factory=PruneReport)


def prune(model: Any = None, config: PruneConfig | None = None, **settings: Any) -> PruneResult:
    """Remove blocks from ``model`` (a name/path, None for the embedded default, or a ``LoadedModel``).

    Settings come as a :class:`PruneConfig`, as its fields by keyword (``prune(remove=6, solver="exact")``), or
    both (keywords replace the config's fields).
    Writes ``model/``, ``problem.json`` (not with a removal method), ``report.json`` and ``report.md`` under
    ``out``. Every setting is checked before the model loads; the model is saved before it is evaluated, and an
    evaluation that fails is recorded in the report (``report["errors"]``).
    """
    import torch

    config = PruneConfig.from_settings(config, **settings)
    request = prepare(config, model)
    config = request.config
    timings, progress = Timings(), config.progress
    torch.manual_seed(config.seed)
    others = OtherTexts.read(config.eval_data if config.evaluate else [])
    inputs = load_inputs(model, data=config.calibration_text(), samples=config.samples, seq_len=config.seq_len,
                         seed=config.seed, validation=config.validation if config.chooses else 0, timings=timings,
                         progress=progress, placement=request.placement)
    net, adapter = inputs.model, inputs.adapter
    save_dtype = save_dtype_of(config.save_dtype, request.model_source, net) if config.save else None
    precision = placement_settings(net, config.device_map, save_dtype)
    target = removal_target(adapter, net, request.spec, config.granularity, config.kinds)
    eval_ids = held_out_ids(inputs.tokenizer, inputs.texts, config.eval_tokens) if config.evaluate else None
    others.tokenize(inputs.tokenizer, config.eval_tokens)
    _log(progress, f"{type(net).__name__}: {len(target.blocks)} blocks ({config.granularity}); adapter "
                   f"{adapter.name}; calibration {inputs.calibration.num_samples}×{inputs.calibration.seq_len} "
                   f"tokens from {inputs.texts.source}")

    lower = "--seq-len, --samples or --validation" + (" (or spread the model with --device-map auto)"
                                                      if precision["device"] != "cpu" else "")
    with memory_hint(f"measuring on {precision['device']}", lower):
        proposals = [request.source.propose(inputs, target, count=config.num_candidates, seed=config.seed,
                                            timings=timings, progress=progress)]
        skipped: list[dict[str, str]] = []
        for source, count in request.extra_sources:
            try:
                proposals.append(source.propose(inputs, target, count=count, seed=config.seed, timings=timings,
                                                progress=progress))
            except LmshrinkError as exc:
                if not request.optional_sources:
                    raise
                skipped.append({"name": source.name, "skipped": str(exc)})
                _log(progress, f"source {source.name} skipped: {exc}")
        healing_stage = HealingStage.from_config(config) if config.heal_steps else None
        choice = _choose(proposals, inputs, target, config, timings, healing_stage)
    chosen = choice.chosen
    budget = budget_facts(target, chosen.indices)
    plan = RemovalPlan([target.blocks[i] for i in chosen.indices], config.granularity, chosen.energy, chosen.loss,
                       {"candidate_rank": chosen.rank, "sources": chosen.sources,
                        **({"method": config.method} if config.method else {}),
                        **({"budget": budget} if budget else {})})
    for note in request.notes:
        _log(progress, note)
    before = None
    if eval_ids is not None:
        with timings("perplexity before"):
            before = perplexity_before(net, eval_ids, window=config.eval_window, progress=progress, adapter=adapter,
                                       granularity=config.granularity)
        others.measure(net, "before", window=config.eval_window, timings=timings, progress=progress)
    if healing_stage is not None:
        with memory_hint(f"preparing the healing on {precision['device']}", lower):
            healing_stage.prepare(inputs, plan.indices, timings)
    params_before = sum(p.numel() for p in net.parameters())
    save_format = adapter.save_format(net, plan.indices, config.granularity)
    with timings("remove"):
        net = adapter.remove(net, plan.indices, config.granularity)
    if budget and save_format == "transformers" and hasattr(net, "config"):
        net.config.lmshrink_budget = budget  # the saved config.json says what the budget removed
    healing = None
    if healing_stage is not None:
        unhealed = None
        if eval_ids is not None:
            from ..evaluate.perplexity import perplexity

            with timings("perplexity unhealed"):
                unhealed = perplexity(net, eval_ids, window=config.eval_window, progress=progress,
                                      desc="perplexity before healing")
            others.measure(net, "unhealed", window=config.eval_window, timings=timings, progress=progress)
        net, healing = healing_stage.apply(net, adapter, timings, unhealed=unhealed)

    report = build_report(request, inputs, target, proposals, choice, plan, before, timings,
                          parameters=(params_before, sum(p.numel() for p in net.parameters())),
                          save_format=save_format, saved=config.save, healing=healing, skipped=skipped,
                          precision=precision)
    report.other_texts = others.scores or None
    if eval_ids is None and not request.eval_tasks:  # nothing to evaluate: the report is complete as saved
        report.record_evaluation(Evaluation(), timings.seconds)
    with timings("save"):
        out = save_outputs(request.out, overwrite=config.overwrite, model=net if config.save else None,
                           tokenizer=inputs.tokenizer, save_format=save_format, plan=plan, save_dtype=save_dtype,
                           problem=proposals[0].problem, report=report)

    def record(evaluation: Evaluation) -> None:
        report.record_evaluation(evaluation, timings.seconds)
        write_report(out, report)

    evaluation = _evaluate(net, inputs.tokenizer, eval_ids, request, timings, record)
    others.measure(net, "after", window=config.eval_window, timings=timings, progress=progress)
    report.other_texts = others.scores or None
    record(evaluation)
    _log(progress, f"done in {timings.total:.1f} s; wrote {out}")
    return PruneResult(out, proposals[0].problem, proposals[0].solutions, plan, net, inputs.tokenizer, report)


def _choose(proposals: list[Proposal], inputs: Inputs, target: Target, config: PruneConfig,
            timings: Timings, healing: HealingStage | None) -> Choice:
    """Set aside candidates the architecture cannot run; the main source's first one, or, when several compete,
    the one with the lowest validation loss (after linear healing when the run heals linearly)."""
    every = [c for p in proposals for c in p.candidates]
    mark_unrunnable(inputs.adapter, inputs.model, every, config.granularity)
    runnable = [c for c in every if c.error is None]
    _log(config.progress and len(runnable) < len(every),
         f"skipped {len(every) - len(runnable)} candidate(s) the architecture cannot run (see report)")
    every_set = Portfolio(every)  # one entry per set, with every source that proposed it
    for p in proposals:
        if p.problem is not None and p.candidates:
            every_set.score(p.candidates[0].source.split("+")[0], p.problem)
    main = [c for c in proposals[0].candidates if c.error is None]
    if not config.chooses:
        return Choice(main[0] if main else runnable[0])
    pool = main[: max(config.rerank, 1)] + [c for p in proposals[1:] for c in p.candidates if c.error is None]
    linear = config.linear_heal_options()
    with timings("validate candidates"):
        top = int(linear["aware_top"])
        _log(config.progress, f"validating {len(pool)} candidate(s) on {config.validation} windows"
                              + (f", the {top or 'all'} lowest again after linear healing"
                                 if config.heal_aware() else ""))
        return choose_by_validation(pool, inputs, granularity=config.granularity,
                                    healing=healing if config.heal_aware() else None,
                                    fit_samples=config.heal_aware_samples(inputs.calibration.num_samples),
                                    finalists=top or None,
                                    progress=config.progress)


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


def build_report(request: PruneRequest, inputs: Inputs, target: Target, proposals: list[Proposal],
                 choice: Choice, plan: RemovalPlan, before: dict[str, float] | None, timings: Timings, *,
                 parameters: tuple[int, int], save_format: str, saved: bool,
                 healing: HealingSummary | None = None, skipped: list[dict[str, str]] | None = None,
                 precision: dict[str, Any] | None = None) -> PruneReport:
    """The run's report, built once the pruned model is ready and before it is saved (status "evaluating";
    :meth:`PruneReport.record_evaluation` completes it). ``precision`` (device, dtype, device map, saved dtype as
    run) replaces the requested values in ``settings``."""
    config, main = request.config, proposals[0]
    problem = main.problem
    settings = config.settings()
    settings.update(eval_tasks=request.eval_tasks, objective_options=getattr(request.source, "objective_options",
                                                                             config.objective_options))
    settings.update(precision or {})
    return PruneReport(
        model=inputs.loaded.name,
        model_source=request.model_source,
        architecture=type(inputs.model).__name__,
        adapter=inputs.adapter.name,
        granularity=config.granularity,
        num_blocks=len(target.blocks),
        removed=[b.to_dict() for b in plan.blocks],
        plan=plan.to_dict(),
        candidates=_candidate_rows(proposals, choice),
        reranked=choice.portfolio is not None,
        selection=choice.to_dict(),
        healing=healing,
        perplexity_before=before,
        parameters_before=parameters[0],
        parameters_after=parameters[1],
        budget=budget_facts(target, plan.indices),
        notes=list(request.notes),
        saved_format=save_format if saved else None,
        saved_format_reason=format_reason(save_format),
        problem={"path": "problem.json", "variables": problem.num_variables,
                 "constraints": [c.to_dict() | {"size": len(c.indices)} for c in problem.constraints]}
        if problem is not None else None,
        solver=main.facts.get("solver"),
        method=main.facts.get("method"),
        sources=[{"name": p.candidates[0].source if p.candidates else None, **p.facts} for p in proposals[1:]]
        + list(skipped or []),
        settings=settings,
        calibration={"source": inputs.texts.source, **inputs.calibration.info},
        timings_s=dict(timings.seconds),
        versions=library_versions(),
    )


def _candidate_rows(proposals: list[Proposal], choice: Choice) -> list[dict[str, Any]]:
    """Every candidate once (pooled candidates carry all their sources), with its paired difference to the chosen
    one when validated."""
    deltas = {tuple(r["indices"]): r for r in choice.comparison}
    rows, seen = [], set()
    for cand in (c for p in proposals for c in p.candidates):
        if cand.key in seen:
            continue
        seen.add(cand.key)
        row = cand.to_dict()
        d = deltas.get(tuple(cand.indices))
        row.update(chosen=cand is choice.chosen, delta=d["delta"] if d else None, delta_se=d["se"] if d else None)
        rows.append(row)
    return rows
