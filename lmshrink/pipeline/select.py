"""Stage 3 of a prune run: pick one candidate. Candidates the architecture cannot run are set aside; the rest
keep their source's order, or the first K are re-ranked by a measured loss."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..core import LmshrinkError
from .candidates import Candidate


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


def select(runnable: Sequence[Candidate], rerank: int, measure: Callable[[Candidate], float], *,
           progress: bool = False) -> Candidate:
    """The first runnable candidate, or with ``rerank`` > 0 the one of the first ``rerank`` with the lowest
    ``measure(candidate)`` (stored as its ``loss``; the earlier one wins a tie)."""
    from tqdm.auto import tqdm

    if rerank <= 0:
        return runnable[0]
    measured = list(runnable[:rerank])
    for cand in tqdm(measured, desc="re-ranking by calibration loss", disable=not progress, leave=False):
        cand.loss = measure(cand)
    return min(measured, key=lambda c: c.loss)
