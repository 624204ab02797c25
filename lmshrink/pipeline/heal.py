"""The heal stage of a prune run, around the removal: what must be taken from the full model is taken before
(:func:`prepare_healing`: the linear maps fitted with the chosen blocks gated off, the teacher's next-token
targets for distillation), and applied to the pruned model after (:func:`apply_healing`: maps folded into the
weights, then distillation). A run whose map cannot be folded stays unhealed, and the report says why."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import LmshrinkError
from ..heal.kd import distill, teacher_targets
from ..heal.linear import LinearHeal
from ..report import Timings
from ..report import log as _log


@dataclass
class PendingHeal:
    """What the full model gave for healing: fitted linear runs and teacher targets (each None when not asked)."""

    linear_runs: list[Any] | None = None
    teacher: Any = None
    reasons: list[str] = field(default_factory=list)


@dataclass
class HealOutcome:
    """What healing did, for the report."""

    steps: list[str]
    linear: list[dict[str, Any]] | None = None
    kd: dict[str, Any] | None = None
    #: held-out perplexity of the pruned model before healing (None without evaluation)
    perplexity_unhealed: dict[str, float] | None = None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "linear": self.linear, "kd": self.kd,
                "perplexity_unhealed": self.perplexity_unhealed, "reasons": self.reasons}


def prepare_healing(config: Any, inputs: Any, removed: list[int], timings: Timings, *,
                    fitted: list[Any] | None = None) -> PendingHeal:
    """Fit the linear maps for ``removed`` (unless the selection already ``fitted`` them) and compute the teacher's
    targets, on the full model."""
    pending = PendingHeal()
    steps = config.heal_steps
    if "linear" in steps:
        if fitted is not None:
            pending.linear_runs = fitted
        else:
            ridge = float(config.linear_heal_options()["ridge"])
            with timings("heal: fit linear maps"):
                _log(config.progress, "fitting linear healing maps")
                try:
                    pending.linear_runs = LinearHeal(ridge=ridge).fit(
                        inputs.model, inputs.adapter, removed, inputs.calibration.input_ids, config.granularity)
                except LmshrinkError as exc:
                    pending.reasons.append(f"linear healing skipped: {exc}")
    if "kd" in steps:
        kd = config.kd_config()
        with timings("heal: teacher targets"):
            _log(config.progress, "computing the teacher's next-token targets")
            pending.teacher = teacher_targets(inputs.model, inputs.calibration.input_ids, top_k=kd.top_k,
                                              temperature=kd.temperature)
    return pending


def apply_healing(pending: PendingHeal, pruned: Any, adapter: Any, config: Any, timings: Timings, *,
                  unhealed: dict[str, float] | None) -> tuple[Any, HealOutcome]:
    """Fold the fitted maps into ``pruned`` and distill into it; the healed model and what was done."""
    outcome = HealOutcome(config.heal_steps, perplexity_unhealed=unhealed, reasons=list(pending.reasons))
    if pending.linear_runs is not None:
        with timings("heal: fold linear maps"):
            runs = LinearHeal().fold(pending.linear_runs, pruned, adapter)
        outcome.linear = [r.to_dict() for r in runs]
        outcome.reasons += [f"layers {r.start}–{r.stop - 1} left unhealed: {r.reason}" for r in runs if r.reason]
    if pending.teacher is not None:
        with timings("heal: distill"):
            _log(config.progress, "healing by distillation from the unpruned model")
            pruned, report = distill(pruned, pending.teacher, config.kd_config(), progress=config.progress)
        outcome.kd = report.to_dict()
    for reason in outcome.reasons:
        print(f"lmshrink: {reason}", file=sys.stderr)
    return pruned, outcome
