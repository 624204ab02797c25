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

from ..core import LmshrinkError
from ..portfolio import Candidate, Portfolio
from .heal import HealingStage, heal_finalists

__all__ = ["Choice", "choose_by_validation", "heal_finalists", "mark_unrunnable"]


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
    on; ``finalists`` is how many candidates were measured after healing when the choice was heal-aware."""

    chosen: Candidate
    portfolio: Portfolio | None = None
    windows: int = 0
    tokens: int = 0
    heal_aware: bool = False
    note: str | None = None
    comparison: list[dict[str, Any]] = field(default_factory=list)
    finalists: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"validated": self.portfolio is not None, "candidates": len(self.portfolio or ()),
                "windows": self.windows, "tokens": self.tokens, "heal_aware": self.heal_aware,
                "finalists": self.finalists, "note": self.note}


def choose_by_validation(candidates: Sequence[Candidate], inputs: Any, *, granularity: str,
                         healing: HealingStage | None = None, fit_samples: int | None = None,
                         finalists: int | None = None, progress: bool = False) -> Choice:
    """Pool ``candidates`` (runnable ones), measure each on the validation windows and return the lowest, with
    every candidate's paired difference to it.

    With a linear ``healing`` stage (heal-aware) the ``finalists`` lowest (all when None) are measured again after
    fitting their own linear maps on the first ``fit_samples`` calibration samples, and the lowest healed loss
    wins; the unhealed losses stay in each candidate's ``unhealed``. Fitted on all of them (``fit_samples`` None),
    the chosen candidate's maps are handed over to the stage.
    """
    from ..evaluate.measured import RemovalLoss

    validation = inputs.calibration.validation
    if validation is None:
        raise LmshrinkError("Choosing among candidates needs validation windows (--validation).")
    portfolio = Portfolio(candidates)
    measure = RemovalLoss(inputs.model, inputs.adapter, validation.input_ids, granularity=granularity,
                          progress=progress)
    portfolio.validate(measure)
    measured = None
    if healing is not None:
        measured = healing.fit_finalists(portfolio, measure, inputs.model, inputs.adapter,
                                         inputs.calibration.input_ids[:fit_samples], finalists=finalists,
                                         keep=fit_samples is None)
    chosen = portfolio.best()
    rows = portfolio.comparison()
    return Choice(chosen, portfolio, windows=validation.num_samples, tokens=int(validation.input_ids.numel()),
                  heal_aware=healing is not None, note=portfolio.separation_note(), comparison=rows,
                  finalists=measured)
