"""Compatibility: QPU-time budgets live in :mod:`lmshrink.core.budget`."""

from __future__ import annotations

from ..core.budget import BudgetExceededError, check_budget

__all__ = ["BudgetExceededError", "check_budget"]
