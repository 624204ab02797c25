"""The heal stage of a prune run, one object around the removal (:class:`HealingStage`):

1. fit, on the full model: the linear maps of the removed blocks, fitted with them gated off, and the teacher's
   next-token targets for distillation (:meth:`HealingStage.prepare`);
2. hand over: a heal-aware choice among candidates fits every finalist's maps to compare them healed
   (:meth:`HealingStage.fit_finalists`); the chosen one's maps are kept, not fitted again;
3. fold, on the pruned model: the maps folded into the weights, then distillation (:meth:`HealingStage.apply`).

A run whose map cannot be folded stays unhealed, and the report says why."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from ..core.errors import LmshrinkError
from ..report import Timings
from ..report import log as _log
from ..report.schema import HealingSummary

#: what healing did, for the report (the record's older name)
HealOutcome = HealingSummary


class HealingStage:
    """Healing of one prune run by ``steps`` ("linear", "kd"): linear maps with ridge ``ridge``, distillation with
    ``kd`` (a :class:`~lmshrink.heal.kd.KDConfig`), at ``granularity``."""

    def __init__(self, steps: Sequence[str], *, ridge: float = 1e-3, kd: Any = None, granularity: str = "layer",
                 progress: bool = False) -> None:
        self.steps, self.ridge, self.kd = list(steps), float(ridge), kd
        self.granularity, self.progress = granularity, progress
        #: the chosen candidate's maps, fitted while choosing (None: fitted by :meth:`prepare`)
        self.handed_over: list[Any] | None = None
        self._linear_runs: list[Any] | None = None
        self._teacher: Any = None
        self._reasons: list[str] = []

    @classmethod
    def from_config(cls, config: Any) -> HealingStage:
        """The stage a :class:`~lmshrink.pipeline.config.PruneConfig` asks for."""
        steps = config.heal_steps
        return cls(steps, ridge=float(config.linear_heal_options()["ridge"]),
                   kd=config.kd_config() if "kd" in steps else None, granularity=config.granularity,
                   progress=config.progress)

    @property
    def linear(self) -> bool:
        return "linear" in self.steps

    # --- 2. hand-over from a heal-aware choice -------------------------------------------------------------------
    def fit_finalists(self, portfolio: Any, measure: Any, model: Any, adapter: Any, fit_ids: Any, *,
                      finalists: int | None = None, keep: bool = True) -> int:
        """Compare a validated ``portfolio`` healed (:func:`heal_finalists`); with ``keep`` the chosen candidate's
        maps are handed over to :meth:`prepare`. Returns the number of finalists."""
        fitted = heal_finalists(portfolio, measure, model, adapter, fit_ids, granularity=self.granularity,
                                ridge=self.ridge, finalists=finalists, progress=self.progress)
        if keep:
            self.handed_over = fitted.get(portfolio.best().key)
        return len(fitted)

    # --- 1. fit on the full model ------------------------------------------------------------------------------
    def prepare(self, inputs: Any, removed: list[int], timings: Timings) -> None:
        """Fit the linear maps for ``removed`` (unless handed over) and compute the teacher's targets, on the full
        model."""
        if self.linear:
            if self.handed_over is not None:
                self._linear_runs = self.handed_over
            else:
                from ..heal.linear import LinearHeal

                with timings("heal: fit linear maps"):
                    _log(self.progress, "fitting linear healing maps")
                    try:
                        self._linear_runs = LinearHeal(ridge=self.ridge).fit(
                            inputs.model, inputs.adapter, removed, inputs.calibration.input_ids, self.granularity)
                    except LmshrinkError as exc:
                        self._reasons.append(f"linear healing skipped: {exc}")
        if "kd" in self.steps:
            from ..heal.kd import teacher_targets

            with timings("heal: teacher targets"):
                _log(self.progress, "computing the teacher's next-token targets")
                self._teacher = teacher_targets(inputs.model, inputs.calibration.input_ids, top_k=self.kd.top_k,
                                                temperature=self.kd.temperature)

    # --- 3. fold into the pruned model -------------------------------------------------------------------------
    def apply(self, pruned: Any, adapter: Any, timings: Timings, *,
              unhealed: dict[str, float] | None) -> tuple[Any, HealingSummary]:
        """Fold the fitted maps into ``pruned`` and distill into it; the healed model and what was done."""
        summary = HealingSummary(self.steps, perplexity_unhealed=unhealed, reasons=list(self._reasons))
        if self._linear_runs is not None:
            from ..heal.linear import LinearHeal

            with timings("heal: fold linear maps"):
                runs = LinearHeal().fold(self._linear_runs, pruned, adapter)
            summary.linear = [r.to_dict() for r in runs]
            summary.reasons += [f"layers {r.start}–{r.stop - 1} left unhealed: {r.reason}" for r in runs if r.reason]
        if self._teacher is not None:
            from ..heal.kd import distill

            with timings("heal: distill"):
                _log(self.progress, "healing by distillation from the dense model")
                pruned, report = distill(pruned, self._teacher, self.kd, progress=self.progress)
            summary.kd = report.to_dict()
        for reason in summary.reasons:
            print(f"lmshrink: {reason}", file=sys.stderr)
        return pruned, summary


def heal_finalists(portfolio: Any, measure: Any, model: Any, adapter: Any, fit_ids: Any, *,
                   granularity: str = "layer", ridge: float = 1e-3, finalists: int | None = None,
                   streams: Any = None, progress: bool = False) -> dict[tuple[int, ...], list[Any]]:
    """Compare a validated ``portfolio`` after linear healing: the ``finalists`` lowest (all when None) are measured
    again by ``measure`` (a RemovalLoss) with their own maps fitted on ``fit_ids``. Every runnable candidate's
    unhealed loss moves to ``unhealed`` and the finalists' ``validation`` becomes the healed loss, so
    ``portfolio.best()`` is the heal-aware choice. ``streams`` are the full model's kept
    :class:`~lmshrink.evaluate.midstack.LayerInputs` of ``fit_ids`` when the caller has them (else computed here
    for two or more finalists). Returns the fitted maps per candidate key."""
    from ..evaluate.midstack import LayerInputs
    from ..heal.linear import LinearHeal

    ranked = sorted(portfolio.runnable(), key=lambda c: c.validation.mean)
    chosen_few = ranked[: finalists or len(ranked)]
    for cand in portfolio.runnable():
        cand.unhealed, cand.validation = cand.validation, None
    healer = LinearHeal(ridge=ridge)
    # one pass of the full model over fit_ids serves every finalist's fit (targets and mid-stack starts)
    if streams is None and len(chosen_few) > 1:
        streams = LayerInputs(model, adapter, fit_ids, healer.batch_size)
    fitted: dict[tuple[int, ...], list[Any]] = {}
    for cand in tqdm(chosen_few, desc="fitting and validating healed candidates", disable=not progress, leave=False):
        fitted[cand.key] = runs = healer.fit(model, adapter, cand.indices, fit_ids, granularity, streams=streams)
        cand.validation = measure.healed(cand.indices, runs)
    return fitted
