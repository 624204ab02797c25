"""The SVD flow, stage by stage: load → evaluate (before) → whiten → problem → solve → plan → compress →
evaluate (after) → save (with the report). With ``heal="kd"`` the dense model's next-token targets are kept before
whitening, and the compressed model is distilled towards them (:mod:`lmshrink.heal.kd`, the factors kept factored)
before the evaluation after.

The objective (``fermi-rank`` by default, any :class:`~lmshrink.objectives.rank.RankObjective`) whitens the matrices
the adapter lists (:meth:`~lmshrink.core.ArchitectureAdapter.linear_layers`: q, k, v, o, gate, up, down of every
Llama block) and poses the :class:`~lmshrink.core.RankAllocationProblem`; the rank solver solves it (a solver that
declares the option ``loss``, such as ``fermigrad``, gets the objective's loss oracle, one that declares ``probe``,
such as ``trust-region``, its allocation probe); the best solution becomes a :class:`~lmshrink.core.RankPlan`, and
the compression applies the plan to the whitened factors. ``ratio`` is the fraction of the decomposed matrices'
parameters the compressed model keeps.

The output directory is checked before any slow work and written last: ``problem.json``, ``plan.json``,
``model/`` (and ``dense/``), ``report.json`` and ``report.md`` go into a temporary directory next to it, which is
renamed into place once complete (:class:`~lmshrink.staging.StagedDir`), so ``out`` holds a whole result or nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import LmshrinkError, RankPlan, SolutionSet, Solver
from ..core.options import parse_option_strings
from ..core.rank import RankAllocationProblem
from ..devices import memory_hint, model_device, placement_settings, save_dtype_of
from ..objectives.rank import RankObjective
from ..plugins import get_objective, get_solver
from ..report import Timings, default_out_dir
from ..report import log as _log
from ..report.schema import HealingSummary, SvdReport
from ..staging import StagedDir, check_output_dir
from .config import HEAL_STEPS, PruneConfig, heal_steps_of, kd_config, kd_option_specs
from .evaluation import OtherTexts
from .heal import HealingStage
from .inputs import Inputs, load_inputs
from .outputs import save_in_dtype
from .request import requested_placement
from .settings import (DataSettings, FactoringSettings, RunSettings, SavedModelSettings, like, setting,
                       with_typed_options)
from .svd_report import svd_report, write_report

#: ``dense``: every matrix whitened on the dense model's inputs (one pass); ``sequential``: each decoder layer on the
#: inputs of the already compressed layers before it (:mod:`lmshrink.compress.sequential`)
WHITENINGS = ("dense", "sequential")

#: how ``update`` refits the kept factors after sequential whitening (:mod:`lmshrink.compress.sequential`)
UPDATES = ("none", "ls", "joint")

#: objective options the pipeline sets from its own settings when the objective declares them
_FROM_SETTINGS = ("ratio", "pivga", "seed", "progress")


@dataclass
class SvdConfig(FactoringSettings, RunSettings, SavedModelSettings):
    """The settings of an svd run (``lmshrink svd`` flags, :func:`svd_compress` keywords); ``device``, ``dtype``,
    ``device_map`` and ``save_dtype`` as in :class:`~lmshrink.pipeline.config.PruneConfig`."""

    command = "svd_compress"

    solver: str = setting("fermigrad", "rank allocation: fermigrad (model loss, default), milp (exact on whitened "
                                       "error), uniform, or any solver of rank-allocation problems (see `lmshrink "
                                       "plugins`)")
    objective: str = setting("fermi-rank", "rank objective: whitens the matrices and poses the problem (default "
                                           "%(default)s)")
    objective_options: dict[str, Any] = setting(
        help="objective option, e.g. (fermi-rank) target=ce, batch_size=8, error_weights=fisher, eps=1e-6",
        flag="--objective-option", options=True, default_factory=dict)
    whitening: str = setting("dense", "dense: whiten every matrix on the dense model's inputs (one pass); "
                                      "sequential: after the allocation, refactor each decoder layer on the inputs "
                                      "of the compressed layers before it", choices=WHITENINGS)
    update: str = setting("none", "with --whitening sequential: refit the kept factors to the dense layer's outputs "
                                  "by least squares (ls: left factor only; joint: both factors, the best rank-r fit)",
                          choices=UPDATES)
    export_dense: bool = setting(False, "also write dense/: a plain transformers model with W_r multiplied back")
    dense_when_slower: bool = setting(False, "keep dense every matrix whose rank is above its shape's time "
                                             "break-even, measured once on this device and dtype for decoding "
                                             "(one token per call) and cached: faster decoding, more parameters "
                                             "than --ratio")
    heal: str | list[str] | None = like(PruneConfig, "heal", help="heal the compressed model: kd (distillation "
                                                                   "from the dense model, the factors trained and "
                                                                   "kept factored) or none")
    heal_options: dict[str, Any] = like(PruneConfig, "heal_options", help="KD healing option: steps, lr, temperature, "
                                                                          "method (lora|full), lora_rank, batch_size, "
                                                                          "top_k")
    seq_len: int = like(DataSettings, "seq_len", 256)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.heal_options, list):
            self.heal_options = parse_option_strings("KD healing", kd_option_specs(), self.heal_options)
        if isinstance(self.heal, str):
            self.heal = heal_steps_of(self.heal)

    @property
    def heal_steps(self) -> list[str]:
        """The healing steps named (KD only, for an svd run)."""
        return list(self.heal or [])

    def check(self) -> None:
        """One sentence for the first setting no run can use."""
        self.check_factoring()
        self.check_run()
        if self.update != "none" and self.whitening != "sequential":
            raise LmshrinkError(f"update={self.update!r} fits the factors to the compressed model's inputs; it needs "
                                f"whitening='sequential'.")
        self.check_heal()
        self.check_save_dtype()

    def check_heal(self) -> None:
        """Refuse healing steps other than kd, KD options without it, and KD settings out of range."""
        for step in self.heal_steps:
            if step == "linear":
                raise LmshrinkError("Linear healing replaces removed blocks, and svd removes none; heal an svd run "
                                    "with --heal kd.")
            if step not in HEAL_STEPS:
                raise LmshrinkError(f"Unknown healing step {step!r} in --heal; svd heals with kd (or none).")
        if self.heal_options and "kd" not in self.heal_steps:
            raise LmshrinkError(f"--heal-option {next(iter(self.heal_options))} sets KD healing, which --heal does "
                                "not name.")
        if "kd" in self.heal_steps:
            self.kd_config()

    def kd_config(self) -> Any:
        """The :class:`~lmshrink.heal.kd.KDConfig` of ``heal_options`` (seeded by ``seed`` unless given)."""
        return kd_config(self.seed, self.heal_options)


@dataclass
class SvdResult:
    """Everything an SVD run produced; ``report`` is the record report.json holds (it also reads as that
    dictionary)."""

    out: Path | None
    problem: RankAllocationProblem
    solutions: SolutionSet
    plan: RankPlan
    model: Any
    tokenizer: Any
    report: SvdReport = field(default_factory=SvdReport)

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


def svd_compress(model: Any = None, config: SvdConfig | None = None, **settings: Any) -> SvdResult:
    """Compress ``model`` (a name/path, None for the embedded default, or a ``LoadedModel``) by whitened SVD.

    Settings are :class:`SvdConfig`'s (each field's help says what it does), as ``config``, as keywords, or both
    (keywords replace the config's fields). Writes ``model/`` (reload with :func:`lmshrink.load_compressed`),
    ``problem.json``, ``plan.json``, ``report.json``, ``report.md`` and, with ``export_dense``, ``dense/`` (a plain
    transformers model) under ``out``, which must be empty or absent (with ``overwrite``, an earlier run's output
    is replaced whole).
    """
    import torch

    config = typed_plugin_options(SvdConfig.from_settings(config, **settings))
    config.check()
    plugins = resolve_plugins(config)  # typos fail before the model loads
    from ..models import DEFAULT_MODEL

    placement = requested_placement(config, model)
    source = DEFAULT_MODEL if model is None else str(model) if isinstance(model, (str, Path)) else None
    timings = Timings()
    out = output_dir(config)
    torch.manual_seed(config.seed)
    others = OtherTexts.read(config.eval_data if config.evaluate else [])
    inputs = load_inputs(model, data=config.calibration_text(), samples=config.samples, seq_len=config.seq_len,
                         seed=config.seed, timings=timings, progress=config.progress, placement=placement)
    net, adapter, calibration = inputs.model, inputs.adapter, inputs.calibration
    save_dtype = save_dtype_of(config.save_dtype, source, net) if out is not None and config.save else None
    precision = placement_settings(net, config.device_map, save_dtype)
    params_before = sum(p.numel() for p in net.parameters())
    _log(config.progress, f"{type(net).__name__}: {len(adapter.linear_layers(net))} matrices to decompose; "
                          f"calibration {calibration.num_samples}×{calibration.seq_len} tokens from "
                          f"{inputs.texts.source}")
    eval_ids = evaluation_tokens(inputs, config)
    ppl_before = evaluate(net, eval_ids, config, timings, "perplexity before")
    others.tokenize(inputs.tokenizer, config.eval_tokens)
    others.measure(net, "before", window=config.eval_window, timings=timings, progress=config.progress)
    lower = "--seq-len or --samples, or the objective option batch_size"
    with memory_hint(f"measuring on {precision['device']}", lower):
        healing = prepare_healing(inputs, config, timings)
        factors = whiten(plugins, inputs, timings, config.progress)
        problem = pose(plugins, factors, inputs, timings)
        solutions = solve(plugins, problem, factors, inputs, config, timings)
    plan = make_plan(problem, solutions, plugins)
    if config.whitening == "sequential":
        del factors
        factors = refit(plugins, inputs, plan, config, timings)
    summary = compress(net, factors, plan, timings, time_break_even(net) if config.dense_when_slower else None)
    del factors
    with memory_hint(f"distilling on {precision['device']}", "--seq-len, or --heal-option batch_size"):
        healed = heal(healing, inputs, eval_ids, config, timings, others)
    net = inputs.model
    ppl_after = evaluate(net, eval_ids, config, timings, "perplexity after")
    others.measure(net, "after", window=config.eval_window, timings=timings, progress=config.progress)

    report = svd_report(inputs, config, plugins, problem, solutions, plan, summary, params_before,
                        sum(p.numel() for p in net.parameters()), ppl_before, ppl_after, timings, precision,
                        healing=healed, model_source=source)
    report.other_texts = others.scores or None
    out = save(inputs, problem, plan, config, out, timings, report, save_dtype)
    _log(config.progress, f"done in {timings.total:.1f} s" + (f"; wrote {out}" if out is not None else ""))
    return SvdResult(out, problem, solutions, plan, net, inputs.tokenizer, report)


# --- stages ------------------------------------------------------------------------------------------------------
def typed_plugin_options(config: SvdConfig) -> SvdConfig:
    """``config`` with the command line's ``KEY=VALUE`` option strings parsed against its objective and solver."""
    objective, solver = get_objective(config.objective), get_solver(config.solver, RankAllocationProblem)
    return with_typed_options(config, objective_options=(f"Objective {objective.name!r}", objective.options),
                              solver_options=(f"Solver {solver.name!r}", solver.options))


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
    solver.validate(solver_options)
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
    from ..data import evaluation_ids

    return evaluation_ids(inputs.tokenizer, inputs.texts, config.eval_tokens) if config.evaluate else None


def evaluate(net: Any, eval_ids: Any, config: SvdConfig, timings: Timings, stage: str) -> dict[str, Any] | None:
    """Held-out perplexity of ``net`` (None without evaluation)."""
    if eval_ids is None:
        return None
    from ..evaluate.perplexity import perplexity

    with timings(stage):
        return perplexity(net, eval_ids, window=config.eval_window, progress=config.progress, desc=stage)


def prepare_healing(inputs: Inputs, config: SvdConfig, timings: Timings) -> HealingStage | None:
    """With ``--heal kd``, the healing stage holding the dense model's next-token targets on the calibration
    windows, computed now, before the model is compressed in place (None without healing)."""
    if not config.heal_steps:
        return None
    healing = HealingStage(config.heal_steps, kd=config.kd_config(), progress=config.progress)
    healing.prepare(inputs, [], timings)
    return healing


def heal(healing: HealingStage | None, inputs: Inputs, eval_ids: Any, config: SvdConfig, timings: Timings,
         others: OtherTexts | None = None) -> HealingSummary | None:
    """Distill the compressed model (``inputs.model``, replaced by the healed one) towards the dense model's
    targets, after measuring its held-out perplexity unhealed (also on ``others``); what healing did (None without
    healing)."""
    if healing is None:
        return None
    unhealed = evaluate(inputs.model, eval_ids, config, timings, "perplexity unhealed")
    if others is not None:
        others.measure(inputs.model, "unhealed", window=config.eval_window, timings=timings,
                       progress=config.progress)
    inputs.loaded.model, summary = healing.apply(inputs.model, inputs.adapter, timings, unhealed=unhealed)
    return summary


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
    """The solver's allocations; a solver with a ``loss`` option gets the objective's loss oracle, one with a
    ``probe`` option its allocation probe."""
    options = dict(plugins.solver_options)
    with timings("solve"):
        if "loss" in plugins.solver.options and options.get("loss") is None:
            oracle = plugins.objective.loss_oracle(inputs.model, factors, problem, inputs.calibration,
                                                   plugins.objective_options)
            if oracle is not None:
                options["loss"] = oracle
        if "probe" in plugins.solver.options and options.get("probe") is None:
            probe = plugins.objective.allocation_probe(inputs.model, factors, problem, inputs.calibration,
                                                       plugins.objective_options)
            if probe is not None:
                options["probe"] = probe
        _log(config.progress, f"allocating ranks with {config.solver} (budget {problem.budget:,.0f} of "
                              f"{problem.total_dense:,})")
        solutions = plugins.solver.solve(problem, seed=config.seed, time_limit=config.time_limit, **options)
    recorded = solutions.info.get("options")
    if isinstance(recorded, dict):
        # the oracle and the probe hold the model and the factors: the record keeps their description
        solutions.info["options"] = {**recorded, **{key: repr(recorded[key]) for key in ("loss", "probe")
                                                    if recorded.get(key) is not None}}
    return solutions


def make_plan(problem: RankAllocationProblem, solutions: SolutionSet, plugins: Plugins) -> RankPlan:
    """The best allocation as a :class:`RankPlan`."""
    source = {"solver": solutions.solver, "objective": plugins.objective.name, "problem": "problem.json"}
    return RankPlan.from_solution(problem, solutions.best.x, source=source)


def refit(plugins: Plugins, inputs: Inputs, plan: RankPlan, config: SvdConfig, timings: Timings) -> Any:
    """The factors recomputed with the plan's ranks by sequential whitening, each decoder layer on the inputs of the
    compressed layers before it, updated as ``config.update`` says (:func:`~lmshrink.compress.sequential.
    sequential_factors`). The ranks were allocated on the one-pass factors."""
    from ..compress.sequential import sequential_factors

    o = plugins.objective_options
    ranks = {m.name: m.rank for m in plan.matrices if not m.dense}
    with timings("sequential whitening"):
        _log(config.progress, f"sequential whitening with the plan's ranks (update {config.update})")
        return sequential_factors(inputs.model, inputs.adapter, inputs.adapter.linear_layers(inputs.model),
                                  inputs.calibration.input_ids, ranks, update=config.update,
                                  batch_size=o.get("gram_batch_size", 8), eps=o.get("eps", 1e-6),
                                  progress=config.progress)


def compress(net: Any, factors: Any, plan: RankPlan, timings: Timings, break_even: Any = None) -> Any:
    """The plan applied to ``net`` in place (a matrix above ``break_even``'s rank for its shape stays dense);
    returns the :class:`~lmshrink.compress.apply.CompressionSummary`."""
    from ..compress.apply import apply_plan

    with timings("compress"):
        return apply_plan(net, factors, plan, break_even=break_even)


def time_break_even(net: Any) -> Any:
    """The decoding time break-even (:class:`~lmshrink.compress.break_even.TimeBreakEven`, one token per call) on
    the device and dtype of ``net``'s first parameter."""
    from ..compress.break_even import TimeBreakEven

    first = next(net.parameters())
    return TimeBreakEven(str(first.device), first.dtype, tokens=1)


def save(inputs: Inputs, problem: RankAllocationProblem, plan: RankPlan, config: SvdConfig, out: Path | None,
         timings: Timings, report: SvdReport, save_dtype: str | None = None) -> Path | None:
    """``problem.json``, ``plan.json``, ``model/`` in lmshrink's format (when saving; and ``dense/`` with
    ``export_dense``), ``report.json`` and ``report.md``, written into a temporary directory and renamed to ``out``
    together. With ``verify``, the staged model is reloaded and its logits compared with the compressed model's
    before the rename, into ``report.verify``. The saved models hold ``save_dtype`` (None: the model's own).
    Returns ``out``."""
    if out is None:
        return None
    from ..compress.export import export_dense
    from ..compress.io import save_compressed

    net, tokenizer = inputs.model, inputs.tokenizer
    with StagedDir(out, overwrite=config.overwrite) as stage:
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
                    for folder in ("model", "dense") if config.export_dense else ("model",):
                        save_in_dtype(net, stage.path / folder, save_dtype)
        if config.save and config.verify:
            with timings("verify reload"):
                report.verify = verify_reload(net, stage.path / "model", inputs.calibration)
        report.timings_s = dict(timings.seconds)
        write_report(stage.path, report)
        return stage.commit()


def verify_reload(net: Any, path: Path, calibration: Any) -> dict[str, Any]:
    """The largest logit difference between ``net`` and the model saved at ``path``, on two calibration samples."""
    import torch

    from ..compress.io import load_compressed

    reloaded = load_compressed(path).to(model_device(net))  # in the dtype it was saved in
    probe = calibration.input_ids[:2, : min(64, calibration.seq_len)].to(model_device(net))
    with torch.no_grad():
        a = net(input_ids=probe, use_cache=False).logits.float()
        b = reloaded(input_ids=probe, use_cache=False).logits.float()
    return {"max_abs_logit_diff": float((a - b).abs().max()), "identical": bool(torch.equal(a, b))}


__all__ = ["SvdConfig", "SvdResult", "svd_compress"]
