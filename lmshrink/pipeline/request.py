"""Stage 0 of a prune run: check everything that needs no model, so that a typo fails in a second, not after
the measurement. Resolves the plugins, validates their options and the lm-eval task names, reads the removal
spec, and checks ``--model`` and ``--out``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..baselines import get_method
from ..cache import remove_cache_orphans
from ..core import BinaryQuadraticProblem, LmshrinkError
from ..core.removal import has_budget, parse_remove, spec_text
from ..evaluate.lm_eval import check_tasks
from ..plugins import get_objective, get_solver, registry
from ..portfolio import source_label
from ..report import default_out_dir
from ..devices import Placement
from ..staging import check_output_dir, remove_orphans
from .candidates import CandidateSource, MethodSource, SolverSource, portfolio_sources
from .config import DEFAULT_PIPELINE, PruneConfig
from .settings import with_typed_options


@dataclass
class PruneRequest:
    """A checked prune request: the settings (the default pipeline filled in), where the candidates come from
    (the main source and the portfolio's extra ones, each with its count), and where the outputs go."""

    config: PruneConfig
    spec: dict[str | None, int]
    source: CandidateSource
    eval_tasks: list[str] | None
    out: Path
    extra_sources: list[tuple[CandidateSource, int]] = field(default_factory=list)
    #: True when the extra sources are the default pipeline's: one that cannot serve this removal is skipped (and
    #: the report says why) instead of stopping the run
    optional_sources: bool = False
    #: the ``model`` argument as a name ``load_model`` reads ("smollm2" for the embedded default; None for a model
    #: passed in loaded, whose source is unknown)
    model_source: str | None = None
    #: where the model runs and in which dtype; None for a model passed in loaded with ``device`` and ``dtype``
    #: left "auto" (it stays as it is)
    placement: Placement | None = None
    #: sentences the report repeats about choices the request made for the user (e.g. a solver that honours a
    #: parameter budget in place of one that does not)
    notes: list[str] = field(default_factory=list)


def prepare(config: PruneConfig, model: Any = None) -> PruneRequest:
    """Check ``config`` (and ``model`` when it is a name or path) without loading anything heavy; with no
    objective or method named, the default pipeline (:data:`~lmshrink.pipeline.config.DEFAULT_PIPELINE`)."""
    from ..models import check_model_source

    out = Path(config.out) if config.out is not None else default_out_dir()
    remove_orphans(out.parent)  # what killed runs left behind, here and in the cache
    remove_cache_orphans()
    config = typed_plugin_options(config)
    optional = config.is_default_pipeline
    config = config.resolved()
    config.check()
    spec = parse_remove(config.remove)
    notes: list[str] = []
    if has_budget(spec):
        config, note = budget_solver(config, spec)
        notes += [note] if note else []
    source = _candidate_source(config)
    extra = []
    if config.candidates:
        solver = get_solver(config.solver, BinaryQuadraticProblem)
        extra = portfolio_sources(config.candidates, config, solver, config.solver_options)
    if has_budget(spec):
        check_budget_sources([source] + ([] if optional else [s for s, _ in extra]), spec)
    eval_tasks = None
    if config.eval_tasks:
        eval_tasks, _ = check_tasks(config.eval_tasks)
    if model is None or isinstance(model, str):
        check_model_source(model)
    check_output_dir(out, config.overwrite)
    from ..models import DEFAULT_MODEL

    given = DEFAULT_MODEL if model is None else str(model) if isinstance(model, (str, Path)) else None
    return PruneRequest(config, spec, source, eval_tasks, out, extra, optional, given,
                        requested_placement(config, model), notes)


def typed_plugin_options(config: PruneConfig) -> PruneConfig:
    """``config`` with the plugin options given as ``KEY=VALUE`` strings (the command line's) parsed against the
    plugin that takes them: the removal method's, or the solver's and the objective's (the default pipeline's
    objective when none is named). Options given as dicts are validated with their source."""
    config.check_option_owners()
    owners: dict[str, tuple[str, Any]] = {}
    if config.method is not None and isinstance(config.method_options, list):
        method = get_method(config.method)
        owners["method_options"] = (f"Method {method.name!r}", method.options)
    if config.method is None and isinstance(config.solver_options, list):
        solver = get_solver(config.solver, BinaryQuadraticProblem)
        owners["solver_options"] = (f"Solver {solver.name!r}", solver.options)
    if config.method is None and isinstance(config.objective_options, list):
        objective = get_objective(config.objective or DEFAULT_PIPELINE["objective"])
        owners["objective_options"] = (f"Objective {objective.name!r}", objective.options)
    return with_typed_options(config, **owners)


#: solvers tried, in this order, for a budget in parameters when the configured solver does not honour weighted
#: bands (the first registered one that does is used)
BUDGET_SOLVERS = ("exact", "milp", "anneal", "tabu")


def budget_solver(config: PruneConfig, spec: dict[str | None, Any]) -> tuple[PruneConfig, str | None]:
    """``config`` with a solver that honours the weighted band of a parameter budget (``--remove 25%``): the
    configured one when it does, else the first of :data:`BUDGET_SOLVERS` that does, with a sentence saying so;
    refused in one sentence when none does. A run with a removal method (``--method``) keeps its settings."""
    if config.method is not None or config.objective is None and not config.candidates:
        return config, None
    configured = get_solver(config.solver, BinaryQuadraticProblem)
    if "weighted" in configured.capabilities.constraint_kinds:
        return config, None
    solvers = registry("solver")
    for name in BUDGET_SOLVERS:
        if name == configured.name or name not in solvers:
            continue
        candidate = get_solver(name, BinaryQuadraticProblem)
        if "weighted" in candidate.capabilities.constraint_kinds:
            if config.solver_options:
                raise LmshrinkError(f"--remove {spec_text(spec)} is a budget in parameters, which solver "
                                    f"{configured.name!r} does not honour; name a solver that does (e.g. --solver "
                                    f"{name}) with its own options.")
            return dataclasses.replace(config, solver=name), (
                f"Solver {configured.name!r} does not honour the weighted band of the budget --remove "
                f"{spec_text(spec)}; {name!r} solved it instead.")
    raise LmshrinkError(f"--remove {spec_text(spec)} is a budget in parameters, and no installed solver honours its "
                        f"weighted band ({configured.name!r} does not); use a removal method that does (--method "
                        "sleb, blockpruner or evopress), or a count of blocks.")


def check_budget_sources(sources: list[CandidateSource], spec: dict[str | None, Any]) -> None:
    """Refuse, before loading, a removal method that removes a number of blocks when the spec is a budget."""
    for source in sources:
        method = getattr(source, "method", None)
        if method is not None and not method.budgets:
            able = [n for n in registry("method").names() if registry("method").create(n).budgets]
            raise LmshrinkError(f"Method {method.name!r} removes a number of blocks, not a budget in parameters "
                                f"(--remove {spec_text(spec)}); use a method that honours budgets "
                                f"({', '.join(able)}) or a count of blocks.")


def requested_placement(config: Any, model: Any) -> Placement | None:
    """The placement ``config`` asks for (``device``, ``dtype``, ``device_map``); None for a model passed in loaded
    when neither ``device`` nor ``dtype`` is named. A device map needs lmshrink to load the model."""
    placement = config.placement()
    if model is None or isinstance(model, (str, Path)):
        return placement
    if config.device_map is not None:
        raise LmshrinkError(f"--device-map {config.device_map} places a model while it loads; pass the model by name "
                            "or path, not loaded.")
    return None if config.device == "auto" and config.dtype == "auto" else placement


def _candidate_source(config: PruneConfig) -> CandidateSource:
    """The removal method, or the objective and solver, with their options validated."""
    if config.method is not None:
        method = get_method(config.method)
        method.validate(config.method_options)
        return MethodSource(method, config.method_options)
    objective = get_objective(config.objective)
    solver = get_solver(config.solver, BinaryQuadraticProblem)
    objective_options = dict(config.objective_options)
    for name, value in (("granularity", config.granularity), ("progress", config.progress)):
        if name in objective.options:
            objective_options.setdefault(name, value)
    objective.validate(objective_options)
    solver.validate(config.solver_options)

    return SolverSource(objective, objective_options, solver, config.solver_options,
                        label=source_label(objective.name, objective_options))
