"""Helpers of the removal-method baselines: the greedy removal order under the spec's constraints, a step logger,
and lookup by name. The contract itself, :class:`RemovalMethod` and its :class:`Selection`, is in
:mod:`lmshrink.core.method` (importable from here too)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..core.errors import LmshrinkError
from ..core.method import RemovalMethod, Selection
from ..core.problem import Constraint
from ..plugins import registry
from ..report import log


def greedy_order(
    constraints: Sequence[Constraint],
    score: Callable[[list[int], list[int]], Mapping[int, float]],
    *,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[list[int], list[dict[str, Any]]]:
    """Remove blocks one at a time: each step removes the lowest-scored block among those still allowed.

    A block is allowed while the constraint group it belongs to has room for it: a cardinality group while it has
    removals left, a weighted band (a parameter budget) while adding the block's weight stays at or below the
    band's upper bound; the run ends when every group is satisfied (each cardinality met, each band's lower bound
    reached). So per-kind counts and budgets are honoured. ``score(removed, allowed)`` returns a score per allowed
    block given the blocks removed so far; it may leave out blocks it knows cannot be the pick (the step picks
    among those it scored). Ties go to the lower index. Returns the removal order and one dict of facts per step.
    """
    group = {i: k for k, c in enumerate(constraints) for i in c.indices}
    weight = {i: float(w) for c in constraints for i, w in zip(c.indices, c.weight_array())}
    used = {k: 0.0 for k in range(len(constraints))}

    def room(i: int) -> bool:
        c = constraints[group[i]]
        return c.upper is None or used[group[i]] + weight[i] <= c.upper + c.tolerance()

    def unmet() -> bool:
        return any(c.lower is not None and used[k] < c.lower - c.tolerance() for k, c in enumerate(constraints))

    removed: list[int] = []
    trace: list[dict[str, Any]] = []
    step = 0
    while unmet():
        allowed = sorted(i for i in group if i not in removed and room(i))
        if not allowed:
            raise LmshrinkError(f"The greedy step {step + 1} has no block left that fits the removal constraints.")
        scores = {i: v for i, v in score(list(removed), allowed).items() if i in allowed}
        if not scores:
            raise LmshrinkError(f"The greedy step {step + 1} scored none of the allowed blocks {allowed}.")
        pick = min(scores, key=lambda i: (scores[i], i))
        removed.append(pick)
        used[group[pick]] += weight[pick]
        step += 1
        fact = {"step": step, "removed": pick, "score": float(scores[pick]),
                "scores": {int(i): float(v) for i, v in sorted(scores.items())}}
        trace.append(fact)
        if on_step is not None:
            on_step(fact)
    return removed, trace


def step_logger(progress: bool, name: str) -> Callable[[dict[str, Any]], None] | None:
    """An ``on_step`` callback for :func:`greedy_order` that prints each step to stderr (None when quiet)."""
    if not progress:
        return None
    return lambda fact: log(True, f"{name}: step {fact['step']} removes block {fact['removed']} "
                                  f"(score {fact['score']:.6g})")


def get_method(name: str) -> RemovalMethod:
    """A new instance of the removal method called ``name``; naming an objective says to use ``objective=``."""
    methods = registry("method")
    if name not in methods and name in registry("objective"):
        raise LmshrinkError(
            f"{name!r} is an objective, not a method: use --objective {name} (objective={name!r}); methods: "
            f"{', '.join(methods.names()) or '(none)'}."
        )
    return methods.create(name)


__all__ = ["RemovalMethod", "Selection", "get_method", "greedy_order", "step_logger"]
