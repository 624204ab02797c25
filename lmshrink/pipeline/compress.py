"""``compress``: one parameter budget over branch removal and SVD ranks, for "this model at R of its size, best
quality".

The budget counts the weights of the *decomposed matrices of the decoder layers*: every matrix the adapter's
``linear_layers`` lists (for Llama-shaped models q, k, v, o, gate, up and down projections of every layer; their
biases, the norms, the embeddings and the LM head do not count and are never changed). ``ratio`` is the fraction
of those numbers the compressed model stores: a removed branch stores none of its matrices, a factored matrix
r(m+n) (PivGa r(m+n) − r²), a dense one m·n.

Stages: load → whitened SVDs and branch-removal losses and truncation sensitivities on the calibration windows
(:func:`lmshrink.objectives.joint.measure_joint`) → the :class:`~lmshrink.core.joint.JointCompressionProblem`
→ solve (``joint-milp``) → remove the chosen branches (``adapter.remove`` at ``sublayer`` granularity) → factor
the kept matrices at their ranks (:func:`lmshrink.compress.apply.apply_plan`, the factors renamed to the layer
numbering after removal) → evaluate → save. ``mode`` ``removal`` forces every kept matrix dense and ``svd`` keeps
every branch: the two halves alone, under the same measurements.

The saved model records both transforms, ``remove_sublayers`` then ``low_rank`` (or ``pivga``), and reloads with
:func:`lmshrink.load_compressed`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import LmshrinkError
from ..core.joint import TRUNCATION_TERMS, JointCompressionProblem
from ..core.plan import RankPlan
from ..plugins import get_solver
from ..report import Timings, default_out_dir, write_json
from ..report import log as _log
from ..report.compress import render_compress_markdown
from ..report.schema import CompressReport
from ..staging import StagedDir, check_output_dir
from .evaluation import OtherTexts
from .inputs import load_inputs
from .request import requested_placement
from .svd import verify_reload
from .settings import DataSettings, FactoringSettings, RunSettings, like, setting, with_typed_options

MODES = ("joint", "removal", "svd")


@dataclass
class CompressConfig(FactoringSettings, RunSettings):
    """The settings of a compress run (``lmshrink compress`` flags, :func:`compress_model` keywords)."""

    command = "compress_model"

    ratio: float = like(FactoringSettings, "ratio", 0.75)
    mode: str = setting("joint", "joint (remove branches and factor matrices, default), removal (whole attention/MLP "
                                 "branches only) or svd (factor only)", choices=MODES)
    solver: str = setting("joint-milp", "the solver of the joint problem", flag=None)
    solver_options: dict[str, Any] = like(FactoringSettings, "solver_options",
                                          help="joint-milp option, e.g. grid_step=8, mip_gap=1e-6 (repeatable)")
    samples: int = like(DataSettings, "samples", 32, help="calibration samples for the whitening (default "
                                                          "%(default)s)")
    seq_len: int = like(DataSettings, "seq_len", 256)
    loss_windows: int | None = setting(16, "calibration samples the removal and truncation losses are measured on "
                                           "(default %(default)s)")
    probe_layers: int = setting(3, "layers whose matrices are truncated to calibrate each matrix kind's sensitivity "
                                   "(with --truncation probes; default %(default)s)")
    truncation: str = setting("fisher", "how a truncation's loss is estimated: fisher (each rank's Fisher estimate "
                                        "on its own output errors, default) or probes (one measured slope per matrix "
                                        "kind)", choices=TRUNCATION_TERMS)

    def check(self) -> None:
        """One sentence for the first setting no run can use."""
        self.check_factoring()
        self.check_run()
        if self.loss_windows is not None and self.loss_windows < 2:
            raise LmshrinkError(f"loss_windows must be at least 2, not {self.loss_windows}.")
        if self.probe_layers < 1:
            raise LmshrinkError(f"probe_layers must be at least 1, not {self.probe_layers}.")


@dataclass
class CompressResult:
    """Everything a compress run produced; ``report`` is the record report.json holds (it also reads as that
    dictionary)."""

    out: Path | None
    problem: JointCompressionProblem
    solutions: Any  # SolutionSet
    removed: list[str]
    ranks: dict[str, int]
    model: Any
    tokenizer: Any
    report: CompressReport = field(default_factory=CompressReport)


def mode_settings(mode: str) -> dict[str, bool]:
    """``allow_removal`` and ``allow_factoring`` of a mode."""
    return {"joint": {}, "removal": {"allow_factoring": False}, "svd": {"allow_removal": False}}[mode]


def compress_model(model: Any = None, config: CompressConfig | None = None, **settings: Any) -> CompressResult:
    """Compress ``model`` (a name/path, None for the embedded default, or a ``LoadedModel``) to ``ratio`` of its
    decomposed decoder matrices' parameters, choosing together which branches to remove and which ranks to keep.

    Settings are :class:`CompressConfig`'s, as ``config``, as keywords, or both (keywords replace the config's
    fields). Writes ``model/`` (reload with
    :func:`lmshrink.load_compressed`), ``problem.json``, ``plan.json``, ``report.json`` and ``report.md`` under
    ``out`` (empty or absent; with ``overwrite`` an earlier run's output is replaced).
    """
    import torch

    config = CompressConfig.from_settings(config, **settings)
    config.check()
    solver = get_solver(config.solver, JointCompressionProblem)
    config = with_typed_options(config, solver_options=(f"Solver {solver.name!r}", solver.options))
    solver_options = solver.validate(config.solver_options)
    out = output_dir(config)
    timings = Timings()
    torch.manual_seed(config.seed)
    others = OtherTexts.read(config.eval_data if config.evaluate else [])
    inputs = load_inputs(model, data=config.calibration_text(), samples=config.samples, seq_len=config.seq_len,
                         seed=config.seed, timings=timings, progress=config.progress,
                         placement=requested_placement(config, model))
    net, adapter = inputs.model, inputs.adapter
    eval_ids = _evaluation_ids(inputs, config)
    ppl_before = _perplexity(net, eval_ids, config, timings, "perplexity before")
    others.tokenize(inputs.tokenizer, config.eval_tokens)
    others.measure(net, "before", window=config.eval_window, timings=timings, progress=config.progress)
    with timings("measure"):
        measured = measure(net, adapter, inputs.calibration.input_ids, config)
    with timings("solve"):
        problem = pose(measured, config, net, adapter)
        solutions = solver.solve(problem, seed=config.seed, time_limit=config.time_limit, **solver_options)
    x = solutions.best.x
    with timings("compress"):
        net, summary = apply_choice(net, adapter, measured.factors, problem, x)
    inputs.loaded.model = net
    ppl_after = _perplexity(net, eval_ids, config, timings, "perplexity after")
    others.measure(net, "after", window=config.eval_window, timings=timings, progress=config.progress)
    report = build_report(config, problem, solutions, measured, summary, ppl_before, ppl_after, timings,
                          inputs.texts.source)
    report.other_texts = others.scores or None
    out = save(inputs, problem, x, config, out, timings, report)
    _log(config.progress, f"done in {timings.total:.1f} s" + (f"; wrote {out}" if out is not None else ""))
    return CompressResult(out, problem, solutions, problem.removed(x), problem.ranks(x), net, inputs.tokenizer,
                          report)


# --- stages ------------------------------------------------------------------------------------------------------
def output_dir(config: CompressConfig) -> Path | None:
    """``config.out`` (default ``./lmshrink-out/<timestamp>`` when saving), checked writable; None when not saving."""
    out = Path(config.out) if config.out is not None else (default_out_dir() if config.save else None)
    if out is not None:
        check_output_dir(out, config.overwrite)
    return out


def measure(net: Any, adapter: Any, calibration_ids: Any, config: CompressConfig) -> Any:
    """The whitened SVDs, branch-removal losses and truncation sensitivities (:func:`~lmshrink.objectives.joint.
    measure_joint`)."""
    from ..objectives.joint import measure_joint

    _log(config.progress, "measuring whitened SVDs, branch removals and truncation sensitivities")
    return measure_joint(net, adapter, calibration_ids, loss_windows=config.loss_windows,
                         probe_layers=config.probe_layers, pivga=config.pivga, truncation=config.truncation,
                         progress=config.progress)


def pose(measured: Any, config: CompressConfig, net: Any, adapter: Any) -> JointCompressionProblem:
    """The joint problem at ``config.ratio`` in ``config.mode``."""
    from ..objectives.joint import joint_problem

    meta = {"model": getattr(net.config, "name_or_path", "") or type(net).__name__, "adapter": adapter.name,
            "mode": config.mode, "measurements": measured.to_dict()}
    return joint_problem(measured, config.ratio, pivga=config.pivga, metadata=meta, **mode_settings(config.mode))


def apply_choice(net: Any, adapter: Any, factors: Any, problem: JointCompressionProblem,
                 x: np.ndarray) -> tuple[Any, Any]:
    """Remove the branches state ``x`` drops, then factor the kept matrices at its ranks; returns the model (a
    removal of whole layers may return a new object) and the :class:`~lmshrink.compress.apply.CompressionSummary`.

    Removal may renumber the layers (a layer that loses both branches goes whole), so each kept matrix is found
    again by identity after the removal and its factors are renamed to its new path."""
    from ..compress.apply import apply_plan
    from ..compress.factoring import SvdFactors

    blocks = adapter.blocks(net, "sublayer")
    if [b.name for b in blocks] != problem.branches:
        raise LmshrinkError("The model's branches are not the problem's; apply a joint choice to the model it was "
                            "measured on.")
    z, _ = problem.split(x)
    ranks = problem.ranks(x)
    modules = {name: net.get_submodule(name) for name in ranks}
    removed = [b for b in range(problem.num_branches) if z[b] == 0]
    if removed:
        net = adapter.remove(net, removed, "sublayer")
    path_of = {id(module): name for name, module in net.named_modules()}
    renamed = {old: path_of[id(module)] for old, module in modules.items()}
    moved = {renamed[old]: dataclasses.replace(factors.factors[old], name=renamed[old]) for old in ranks}
    plan = RankPlan.from_ranks({new: f.shape for new, f in moved.items()}, {renamed[o]: r for o, r in ranks.items()},
                               pivga=problem.pivga)
    summary = apply_plan(net, SvdFactors(moved, factors.tokens, [], dict(factors.info)), plan)
    return net, summary


def _evaluation_ids(inputs: Any, config: CompressConfig) -> Any:
    from ..data import evaluation_ids

    return evaluation_ids(inputs.tokenizer, inputs.texts, config.eval_tokens) if config.evaluate else None


def _perplexity(net: Any, eval_ids: Any, config: CompressConfig, timings: Timings, stage: str) -> Any:
    if eval_ids is None:
        return None
    from ..evaluate.perplexity import perplexity

    with timings(stage):
        return perplexity(net, eval_ids, window=config.eval_window, progress=config.progress, desc=stage)


def build_report(config: CompressConfig, problem: JointCompressionProblem, solutions: Any, measured: Any,
                 summary: Any, ppl_before: Any, ppl_after: Any, timings: Timings, source: str) -> CompressReport:
    """The run's record: the choice (removed branches, factored matrices), the budget, the measurements and the
    perplexities (the save adds the reload check, ``verify``, and the save's timings)."""
    x = solutions.best.x
    factored = {k: v for k, v in summary.ranks.items() if summary.kinds[k] != "dense"}
    return CompressReport(
        settings=config.to_dict(),
        data=source,
        params={"counted": "weights of the decomposed decoder matrices (adapter.linear_layers)",
                "dense": problem.total_dense, "budget": problem.budget, "kept": problem.cost(x),
                "kept_ratio": problem.cost(x) / problem.total_dense},
        removed_branches=problem.removed(x),
        factored=factored,
        dense_matrices=sorted(k for k, v in summary.kinds.items() if v == "dense"),
        estimated_loss_increase=float(solutions.best.energy),
        solver={"name": solutions.solver, "info": {k: v for k, v in solutions.info.items() if k != "options"}},
        measurements=measured.to_dict(),
        perplexity_before=ppl_before,
        perplexity_after=ppl_after,
        timings_s=dict(timings.seconds),
    )


def save(inputs: Any, problem: JointCompressionProblem, x: np.ndarray, config: CompressConfig, out: Path | None,
         timings: Timings, report: CompressReport) -> Path | None:
    """``problem.json``, ``plan.json`` (removed branches and ranks), ``model/`` (lmshrink's format),
    ``report.json`` and ``report.md``, staged and renamed to ``out`` together; ``verify`` reloads the model first
    and records the largest logit difference."""
    if out is None:
        return None
    from ..compress.io import save_compressed

    net = inputs.model
    with StagedDir(out, overwrite=config.overwrite) as stage:
        with timings("save"):
            problem.save(stage.path / "problem.json")
            plan = {"format": "lmshrink.joint_plan/1", "removed_branches": problem.removed(x),
                    "ranks": problem.ranks(x), "pivga": problem.pivga, "cost": problem.cost(x),
                    "budget": problem.budget, "energy": problem.energy(x)}
            write_json(stage.path / "plan.json", plan)
            if config.save:
                info = {"command": "compress", "ratio": config.ratio, "mode": config.mode,
                        "removed_branches": plan["removed_branches"], "ranks": report.factored}
                save_compressed(net, stage.path / "model", tokenizer=inputs.tokenizer, info=info)
        if config.save and config.verify:
            with timings("verify reload"):
                report.verify = verify_reload(net, stage.path / "model", inputs.calibration)
        report.timings_s = dict(timings.seconds)
        write_json(stage.path / "report.json", report.to_json())
        (stage.path / "report.md").write_text(render_compress_markdown(report))
        return stage.commit()


__all__ = ["CompressConfig", "CompressResult", "MODES", "apply_choice", "compress_model"]
