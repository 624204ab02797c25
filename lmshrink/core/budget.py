"""Budgets of QPU time: the error a run raises when its estimate exceeds the time left, before it submits."""

from __future__ import annotations

from .errors import LmshrinkError


class BudgetExceededError(LmshrinkError):
    """A run's estimated QPU (or device) time exceeds its ``max_qpu_seconds``; nothing was submitted."""

    def __init__(self, message: str, estimate_s: float, budget_s: float) -> None:
        super().__init__(message)
        self.estimate_s = float(estimate_s)
        self.budget_s = float(budget_s)


def check_budget(estimate_s: float, max_seconds: float | None, what: str) -> None:
    """Refuse, before submitting, a run whose estimated QPU seconds exceed ``max_seconds`` (None: no limit)."""
    if max_seconds is not None and estimate_s > max_seconds:
        raise BudgetExceededError(
            f"{what} would take an estimated {estimate_s:.4g} s of QPU time, more than max_qpu_seconds="
            f"{max_seconds:.4g}; nothing was submitted.", estimate_s, max_seconds)
