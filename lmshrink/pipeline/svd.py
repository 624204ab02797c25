"""The SVD flow, stage by stage: load → evaluate (before) → whiten → problem → solve → plan → compress →
evaluate (after) → save (with the report).

The objective (``fermi-rank`` by default, any :class:`~lmshrink.objectives.rank.RankObjective`) whitens the
matrices the adapter lists (:meth:`~lmshrink.core.ArchitectureAdapter.linear_layers`: q, k, v, o, gate, up, down
of every Llama block) and poses the :class:`~lmshrink.core.RankAllocationProblem`; the rank solver solves it (a
solver that declares the option ``loss``, such as ``fermigrad``, gets the objective's loss oracle); the best
solution becomes a :class:`~lmshrink.core.RankPlan`, and the compression applies the plan to the whitened
factors. ``ratio`` is the fraction of the decomposed matrices' parameters the compressed model keeps.

The output directory is checked before any slow work and written last: ``problem.json``, ``plan.json``,
``model/`` (and ``dense/``), ``report.json`` and ``report.md`` go into a temporary directory next to it, which is
renamed into place once complete (:class:`~lmshrink.staging.StagedDir`), so ``out`` holds a whole result or nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..compress.apply import apply_plan
from ..compress.export import export_dense
from ..compress.io import load_compressed
from ..compress.sequential import UPDATES, sequential_factors
from ..core import LmshrinkError, RankPlan, SolutionSet, Solver
from ..core.options import validate_options
from ..core.rank import RankAllocationProblem
from ..data import evaluation_ids
from ..devices import (
    Placement,
    check_save_dtype,
    memory_hint,
    model_device,
    placement_settings,
    resolve_placement,
    save_dtype_of,
)
from ..models import DEFAULT_MODEL
from ..objectives.rank import RankObjective
from ..plugins import get_objective, get_solver
from ..report import Timings, default_out_dir
from ..report import log as _log
from ..staging import StagedDir, check_output_dir
from .inputs import Inputs, load_inputs
from .request import requested_placement
from .svd_report import svd_report, write_report

#: ``dense``: every matrix whitened on the dense model's inputs (one pass); ``sequential``: each decoder layer on the
#: inputs of the already compressed layers before it (:mod:`lmshrink.compress.sequential`)
WHITENINGS = ("dense", "sequential")

#: objective options the pipeline sets from its own settings when the objective declares them
_FROM_SETTINGS = ("ratio", "pivga", "seed", "progress")


@dataclass
class SvdConfig:
    """The settings of an svd run; :func:`svd_compress` takes the same names as keywords. ``device``, ``dtype``,
    ``device_map`` and ``save_dtype`` as in :class:`~lmshrink.pipeline.config.PruneConfig`."""

    ratio: float = 0.8
    solver: str = "fermigrad"
    pivga: bool = False
    objective: str = "fermi-rank"
    data: str | list[str] | None = None
    samples: int = 64
    seq_len: int = 256
    seed: int = 0
    out: str | Path | None = None
    solver_options: dict[str, Any] = field(default_factory=dict)
    objective_options: dict[str, Any] = field(default_factory=dict)
    time_limit: float | None = None
    eval_tokens: int = 16384
    eval_window: int = 512
    evaluate: bool = True
    save: bool = True
    export_dense: bool = False
    overwrite: bool = False
    verify: bool = True
    progress: bool = True
    device: str = "auto"
    dtype: str = "auto"
    device_map: str | None = None
    save_dtype: str = "auto"
    whitening: str = "dense"
    update: str = "none"

    def __post_init__(self) -> None:
        self.solver_options = dict(self.solver_options or {})
        self.objective_options = dict(self.objective_options or {})

    def check(self) -> None:
        """One sentence for the first setting no run can use."""
        if not 0 < self.ratio <= 1:
            raise LmshrinkError(f"ratio must be in (0, 1], not {self.ratio}.")
        if self.samples < 1:
            raise LmshrinkError(f"samples must be at least 1, not {self.samples}.")
        if self.seq_len < 2:
            raise LmshrinkError(f"seq_len must be at least 2 tokens, not {self.seq_len}.")
        if self.evaluate and (self.eval_tokens < 2 or self.eval_window < 2):
            raise LmshrinkError(f"eval_tokens and eval_window must be at least 2, not {self.eval_tokens} and "
                                f"{self.eval_window}.")
        if self.whitening not in WHITENINGS:
            raise LmshrinkError(f"whitening must be one of {', '.join(WHITENINGS)}, not {self.whitening!r}.")

        if self.update not in UPDATES:
            raise LmshrinkError(f"update must be one of {', '.join(UPDATES)}, not {self.update!r}.")
        if self.update != "none" and self.whitening != "sequential":
            raise LmshrinkError(f"update={self.update!r} fits the factors to the compressed model's inputs; it needs "
                                f"whitening='sequential'.")
        if self.time_limit is not None and not self.time_limit > 0:
            raise LmshrinkError(f"time_limit must be positive, not {self.time_limit}.")
        self.placement()
        check_save_dtype(self.save_dtype)

    def placement(self) -> Placement:
        """``device``, ``dtype`` and ``device_map`` checked, with "auto" resolved on this machine."""
        return resolve_placement(self.device, self.dtype, self.device_map)

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


@dataclass
class SvdResult:
    """Everything an SVD run produced; ``report`` is what report.json holds."""

    out: Path | None
    problem: RankAllocationProblem
    solutions: SolutionSet
    plan: RankPlan
    model: Any
    tokenizer: Any
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def ranks(self) -> dict[str, int]:
        """Matrix name → rank kept (the plan's)."""
        return self.plan.ranks


@dataclass
class Plugins:
    """The objective and the solver of a run, with their validated options, resolved before any slow work."""

    objective: Any  # a RankObjective
    objective_options: dict[str, Any]
    solver: Solver
    solver_options: dict[str, Any]


def svd_compress(model: Any = None, *, config: SvdConfig | None = None, **settings: Any) -> SvdResult:
    """Compress ``model`` (a name/path, None for the embedded default, or a ``LoadedModel``) by whitened SVD.

    Settings are :class:`SvdConfig`'s, as ``config`` or as keywords: ``ratio``; ``solver`` picks the rank allocation
    (``fermigrad``, ``milp``, ``uniform`` or any solver of :class:`~lmshrink.core.RankAllocationProblem`); ``pivga``
    stores the factors gauge-fixed, so the same budget buys higher ranks; ``objective_options`` go to the objective
    (``fermi-rank``: ``target``, ``batch_size``, ``normalize``, ``eps``, ...). Writes ``model/`` (reload with
    :func:`lmshrink.load_compressed`), ``problem.json``, ``plan.json``, ``report.json``, ``report.md`` and, with
    ``export_dense``, ``dense/`` (a plain transformers model) under ``out``. ``whitening="sequential"`` recomputes
    the factors after the allocation, each decoder layer on the inputs of the compressed layers before it, and
    ``update`` ("ls" or "joint") refits the kept factors to the dense layer's outputs there
    (:mod:`lmshrink.compress.sequential`); the files go under ``out``, which must be empty or absent (with
    ``overwrite``, an earlier run's output is replaced whole). ``verify`` reloads the saved model and records the
    largest logit difference.
    """
    if config is not None and settings:
        raise LmshrinkError("Give svd_compress either config= or keyword settings, not both.")
    config = config if config is not None else SvdConfig(**settings)
    config.check()
    plugins = resolve_plugins(config)  # typos fail before the model loads

    placement = requested_placement(config, model)
    source = DEFAULT_MODEL if model is None else str(model) if isinstance(model, (str, Path)) else None
    timings = Timings()
    out = output_dir(config)
    torch.manual_seed(config.seed)
    inputs = load_inputs(model, data=config.data, samples=config.samples, seq_len=config.seq_len, seed=config.seed,
                         timings=timings, progress=config.progress, placement=placement)
    net, adapter, calibration = inputs.model, inputs.adapter, inputs.calibration
    save_dtype = save_dtype_of(config.save_dtype, source, net) if out is not None and config.save else None
    precision = placement_settings(net, config.device_map, save_dtype)
    params_before = sum(p.numel() for p in net.parameters())
    _log(config.progress, f"{type(net).__name__}: {len(adapter.linear_layers(net))} matrices to decompose; "
                          f"calibration {calibration.num_samples}×{calibration.seq_len} tokens from "
                          f"{inputs.texts.source}")
    eval_ids = evaluation_tokens(inputs, config)
    ppl_before = evaluate(net, eval_ids, config, timings, "perplexity before")
    lower = "--seq-len or --samples, or the objective option batch_size"
    with memory_hint(f"measuring on {precision['device']}", lower):
        factors = whiten(plugins, inputs, timings, config.progress)
        problem = pose(plugins, factors, inputs, timings)
        solutions = solve(plugins, problem, factors, inputs, config, timings)
    plan = make_plan(problem, solutions, plugins)
    if config.whitening == "sequential":
        del factors
        factors = refit(plugins, inputs, plan, config, timings)
    summary = compress(net, factors, plan, timings)
    del factors
    ppl_after = evaluate(net, eval_ids, config, timings, "perplexity after")

    def report(verified: dict[str, Any] | None) -> dict[str, Any]:
        return svd_report(inputs, config, plugins, problem, solutions, plan, summary, params_before,
                          sum(p.numel() for p in net.parameters()), ppl_before, ppl_after, verified, timings,
                          precision)

    out, final = save(inputs, problem, plan, config, out, timings, report, save_dtype)
    _log(config.progress, f"done in {timings.total:.1f} s" + (f"; wrote {out}" if out is not None else ""))
    return SvdResult(out, problem, solutions, plan, net, inputs.tokenizer, final)


# --- stages ------------------------------------------------------------------------------------------------------
def resolve_plugins(config: SvdConfig) -> Plugins:
    """The objective and the rank solver named in ``config``, with their options validated."""
    objective = get_objective(config.objective)
    if not isinstance(objective, RankObjective):
        raise LmshrinkError(f"Objective {config.objective!r} does not pose rank-allocation problems; svd needs a rank "
                            f"objective such as 'fermi-rank'.")
    given = dict(config.objective_options)
    given.update({k: getattr(config, k) for k in _FROM_SETTINGS if k in objective.options})
    objective_options = objective.validate(given)
    solver = get_solver(config.solver, RankAllocationProblem)
    solver_options = dict(config.solver_options)
    if "progress" in solver.options:
        solver_options.setdefault("progress", config.progress)
    validate_options(f"Solver {solver.name!r}", solver.options, solver_options)
    return Plugins(objective, objective_options, solver, solver_options)


def output_dir(config: SvdConfig) -> Path | None:
    """``config.out`` (default ``./lmshrink-out/<timestamp>`` when saving), checked to be writable by this run (empty
    or absent, or an earlier run's with ``overwrite``) but not created yet; None when nothing is written."""
    out = Path(config.out) if config.out is not None else (default_out_dir() if config.save else None)
    if out is not None:
        check_output_dir(out, config.overwrite)
    return out


def evaluation_tokens(inputs: Inputs, config: SvdConfig) -> Any:
    """The held-out token ids perplexity is measured on (None without evaluation)."""
    return evaluation_ids(inputs.tokenizer, inputs.texts, config.eval_tokens) if config.evaluate else None


def evaluate(net: Any, eval_ids: Any, config: SvdConfig, timings: Timings, stage: str) -> dict[str, Any] | None:
    """Held-out perplexity of ``net`` (None without evaluation)."""
    if eval_ids is None:
        return None
    from ..evaluate.perplexity import perplexity

    with timings(stage):
        return perplexity(net, eval_ids, window=config.eval_window, progress=config.progress, desc=stage)


def whiten(plugins: Plugins, inputs: Inputs, timings: Timings, progress: bool) -> Any:
    """Gram statistics on the calibration samples and the whitened SVD of every decomposed matrix."""
    with timings("whiten"):
        _log(progress, "collecting whitening statistics and computing whitened SVDs")
        return plugins.objective.whiten(inputs.model, inputs.adapter, inputs.calibration, plugins.objective_options)


def pose(plugins: Plugins, factors: Any, inputs: Inputs, timings: Timings) -> RankAllocationProblem:
    """The objective's rank-allocation problem."""
    with timings("problem"):
        return plugins.objective.pose(factors, inputs.model, inputs.adapter, inputs.calibration,
                                      plugins.objective_options)


def solve(plugins: Plugins, problem: RankAllocationProblem, factors: Any, inputs: Inputs, config: SvdConfig,
          timings: Timings) -> SolutionSet:
    """The solver's allocations; a solver with a ``loss`` option gets the objective's loss oracle."""
    options = dict(plugins.solver_options)
    with timings("solve"):
        if "loss" in plugins.solver.options and options.get("loss") is None:
            oracle = plugins.objective.loss_oracle(inputs.model, factors, problem, inputs.calibration,
                                                   plugins.objective_options)
            if oracle is not None:
                options["loss"] = oracle
        _log(config.progress, f"allocating ranks with {config.solver} (budget {problem.budget:,.0f} of "
                              f"{problem.total_dense:,})")
        solutions = plugins.solver.solve(problem, seed=config.seed, time_limit=config.time_limit, **options)
    recorded = solutions.info.get("options")
    if isinstance(recorded, dict) and recorded.get("loss") is not None:
        # the oracle holds the model and the factors: the record keeps its description, not the object
        solutions.info["options"] = {**recorded, "loss": repr(recorded["loss"])}
    return solutions


def make_plan(problem: RankAllocationProblem, solutions: SolutionSet, plugins: Plugins) -> RankPlan:
    """The best allocation as a :class:`RankPlan`."""
    source = {"solver": solutions.solver, "objective": plugins.objective.name, "problem": "problem.json"}
    return RankPlan.from_solution(problem, solutions.best.x, source=source)


def refit(plugins: Plugins, inputs: Inputs, plan: RankPlan, config: SvdConfig, timings: Timings) -> Any:
    """The factors recomputed with the plan's ranks by sequential whitening, each decoder layer on the inputs of the
    compressed layers before it, updated as ``config.update`` says (:func:`~lmshrink.compress.sequential.
    sequential_factors`). The ranks were allocated on the one-pass factors."""
    o = plugins.objective_options
    ranks = {m.name: m.rank for m in plan.matrices if not m.dense}
    with timings("sequential whitening"):
        _log(config.progress, f"sequential whitening with the plan's ranks (update {config.update})")
        return sequential_factors(inputs.model, inputs.adapter, inputs.adapter.linear_layers(inputs.model),
                                  inputs.calibration.input_ids, ranks, update=config.update,
                                  batch_size=o.get("gram_batch_size", 8), eps=o.get("eps", 1e-6),
                                  progress=config.progress)


def compress(net: Any, factors: Any, plan: RankPlan, timings: Timings) -> Any:
    """The plan applied to ``net`` in place; returns the :class:`~lmshrink.compress.apply.CompressionSummary`."""
    with timings("compress"):
        return apply_plan(net, factors, plan)


def save(inputs: Inputs, problem: RankAllocationProblem, plan: RankPlan, config: SvdConfig, out: Path | None,
         timings: Timings, report: Callable[[dict[str, Any] | None], dict[str, Any]],
         save_dtype: str | None = None) -> tuple[Path | None, dict]:
    """``problem.json``, ``plan.json``, ``model/`` in lmshrink's format (when saving; and ``dense/`` with
    ``export_dense``), ``report.json`` and ``report.md``, written into a temporary directory and renamed to ``out``
    together. With ``verify``, the staged model is reloaded and its logits compared with the compressed model's
    before the rename. The saved models hold ``save_dtype`` (None: the model's own). Returns ``out`` and the
    report (``report(verified)``)."""
    if out is None:
        return None, report(None)
    from ..compress.io import save_compressed

    net, tokenizer = inputs.model, inputs.tokenizer
    with StagedDir(out, overwrite=config.overwrite) as stage:
        verified = None
        with timings("save"):
            problem.save(stage.path / "problem.json")
            plan.save(stage.path / "plan.json")
            if config.save:
                info = {"command": "svd", "ratio": config.ratio, "solver": config.solver, "pivga": config.pivga,
                        "ranks": plan.ranks}
                save_compressed(net, stage.path / "model", tokenizer=tokenizer, info=info)
                if config.export_dense:
                    export_dense(net, stage.path / "dense", tokenizer)
                if save_dtype is not None:
                    from .outputs import save_in_dtype

                    for folder in ("model", "dense") if config.export_dense else ("model",):
                        save_in_dtype(net, stage.path / folder, save_dtype)
        if config.save and config.verify:
            with timings("verify reload"):
                verified = verify_reload(net, stage.path / "model", inputs.calibration)
        final = report(verified)
        write_report(stage.path, final)
        return stage.commit(), final


def verify_reload(net: Any, path: Path, calibration: Any) -> dict[str, Any]:
    """The largest logit difference between ``net`` and the model saved at ``path``, on two calibration samples."""
    reloaded = load_compressed(path).to(model_device(net))  # in the dtype it was saved in
    probe = calibration.input_ids[:2, : min(64, calibration.seq_len)].to(model_device(net))
    with torch.no_grad():
        a = net(input_ids=probe, use_cache=False).logits.float()
        b = reloaded(input_ids=probe, use_cache=False).logits.float()
    return {"max_abs_logit_diff": float((a - b).abs().max()), "identical": bool(torch.equal(a, b))}


__all__ = ["SvdConfig", "SvdResult", "svd_compress"]
