"""Stage 3 of a prune run: pick one candidate.

Candidates the architecture cannot run are set aside. With one source and no re-ranking the first runnable
candidate wins (the solver's lowest energy, or the method's pick). When several compete (``rerank`` K: the main
source's first K; ``candidates``: more sources), they are pooled in a :class:`~lmshrink.portfolio.Portfolio` and
measured on validation windows disjoint from the calibration samples the objectives were built on
(:class:`~lmshrink.evaluate.measured.RemovalLoss`), after linear healing when the run heals linearly (each
candidate with its own fitted maps), and the lowest loss wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from ..core import LmshrinkError
from ..evaluate.measured import RemovalLoss
from ..evaluate.midstack import LayerInputs
from ..heal.linear import LinearHeal
from ..portfolio import Candidate, Portfolio


def mark_unrunnable(adapter: Any, model: Any, candidates: Sequence[Candidate], granularity: str) -> list[Candidate]:
    """Set ``error`` on each candidate the architecture cannot run; the others, in order (refused if none)."""
    for cand in candidates:
        cand.error = adapter.removal_error(model, cand.indices, granularity)
    runnable = [c for c in candidates if c.error is None]
    if not runnable:
        raise LmshrinkError(
            f"Every one of the {len(candidates)} candidates leaves a model the architecture cannot run "
            f"({candidates[0].error}). Ask for more candidates with --top-k, or name per-kind counts with --remove."
        )
    return runnable


@dataclass
class Choice:
    """The chosen candidate, the portfolio it was chosen from (None without a choice), and what it was measured
    on; ``heal_runs`` are the chosen candidate's fitted linear maps when the choice was heal-aware, and
    ``finalists`` how many candidates were measured after healing."""

    chosen: Candidate
    portfolio: Portfolio | None = None
    windows: int = 0
    tokens: int = 0
    heal_aware: bool = False
    heal_runs: list[Any] | None = None
    note: str | None = None
    comparison: list[dict[str, Any]] = field(default_factory=list)
    finalists: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"validated": self.portfolio is not None, "candidates": len(self.portfolio or ()),
                "windows": self.windows, "tokens": self.tokens, "heal_aware": self.heal_aware,
                "finalists": self.finalists, "note": self.note}


def choose_by_validation(candidates: Sequence[Candidate], inputs: Any, *, granularity: str, heal_aware: bool,
                         ridge: float = 1e-3, fit_samples: int | None = None, finalists: int | None = None,
                         progress: bool = False) -> Choice:
    """Pool ``candidates`` (runnable ones), measure each on the validation windows and return the lowest, with
    every candidate's paired difference to it.

    With ``heal_aware`` the ``finalists`` lowest (all when None) are measured again after fitting their own linear
    maps on the first ``fit_samples`` calibration samples, and the lowest healed loss wins; the unhealed losses
    stay in each candidate's ``unhealed``.
    """
    validation = inputs.calibration.validation
    if validation is None:
        raise LmshrinkError("Choosing among candidates needs validation windows (--validation).")
    portfolio = Portfolio(candidates)
    measure = RemovalLoss(inputs.model, inputs.adapter, validation.input_ids, granularity=granularity,
                          progress=progress)
    portfolio.validate(measure)
    fitted: dict[tuple[int, ...], list[Any]] = {}
    if heal_aware:
        fitted = heal_finalists(portfolio, measure, inputs.model, inputs.adapter,
                                inputs.calibration.input_ids[:fit_samples], granularity=granularity, ridge=ridge,
                                finalists=finalists, progress=progress)
    chosen = portfolio.best()
    rows = portfolio.comparison()
    return Choice(chosen, portfolio, windows=validation.num_samples, tokens=int(validation.input_ids.numel()),
                     heal_aware=heal_aware, heal_runs=fitted.get(chosen.key) if fit_samples is None else None,
                     note=portfolio.separation_note(), comparison=rows, finalists=len(fitted) if heal_aware else None)


def heal_finalists(portfolio: Portfolio, measure: Any, model: Any, adapter: Any, fit_ids: Any, *,
                   granularity: str = "layer", ridge: float = 1e-3, finalists: int | None = None,
                   streams: Any = None, progress: bool = False) -> dict[tuple[int, ...], list[Any]]:
    """Compare a validated ``portfolio`` after linear healing: the ``finalists`` lowest (all when None) are measured
    again by ``measure`` (a RemovalLoss) with their own maps fitted on ``fit_ids``. Every runnable candidate's
    unhealed loss moves to ``unhealed`` and the finalists' ``validation`` becomes the healed loss, so
    ``portfolio.best()`` is the heal-aware choice. ``streams`` are the full model's kept
    :class:`~lmshrink.evaluate.midstack.LayerInputs` of ``fit_ids`` when the caller has them (else computed here
    for two or more finalists). Returns the fitted maps per candidate key."""
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
