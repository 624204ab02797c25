"""SLEB-style greedy removal (Song et al. 2024): at each step, remove the block whose removal gives the lowest
measured calibration loss on the model pruned so far; repeat M times.

Every step measures the loss of every allowed block (gated to 0 together with the blocks already removed), so a
run costs about N·M forward passes over the samples used: the default uses the first 4 calibration samples,
like the ``pairs`` objective. Per-kind counts are honoured (a block is a candidate while its group has removals
left), at any granularity. Given the sets an earlier run chose at other totals (``known``), the steps inside them
measure only their blocks: growing a saved run from M to M' costs about N·(M' - M) passes plus a few.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..core import option
from ..core.method import RemovalMethod, Selection
from ..objectives.common import require_finite
from .base import greedy_order, step_logger


@dataclass(frozen=True)
class GreedyLossOptions:
    samples: int | None = option(4, "calibration samples per loss measurement (the first ones; None: all)")
    batch_size: int = option(8, "samples per forward pass")


class GreedyLossRemoval(RemovalMethod):
    """Greedy block removal by measured calibration loss, recomputed after each removal."""

    name = "sleb"
    description = "SLEB baseline: greedily remove the block whose removal gives the lowest measured loss."
    nested = True
    budgets = True
    options = GreedyLossOptions

    def __init__(self, loss: Callable[[Sequence[int]], float] | None = None,
                 known: Sequence[Sequence[int]] = ()) -> None:
        #: optional oracle ``loss(removed_indices)`` used instead of measuring, e.g. a memo a caller shares with
        #: other measurements on the same samples (the benchmark does); None measures with calibration_loss
        self.loss = loss
        #: sets this method chose before with the same loss (its choices at other totals, e.g. from a saved run):
        #: they are nested prefixes of one greedy order, so while the blocks removed so far lie inside a known
        #: larger set the next pick is one of that set's other blocks, and only those are measured
        self.known = sorted((frozenset(k) for k in known), key=len)

    #: what the report says each step's score is
    step_score = "calibration loss with the block removed"

    def loss_meter(self, model: Any, adapter: Any, ids: Any, *, granularity: str, batch_size: int,
                   progress: bool) -> Callable[[list[int]], float]:
        """The measurement ``loss(removed) -> float`` the greedy steps compare (lower is better): the mean
        calibration loss on ``ids`` with ``removed`` gated off. Subclasses measuring otherwise override this."""
        from ..evaluate.loss import calibration_loss

        def loss(removed: list[int]) -> float:
            value = calibration_loss(model, ids, adapter=adapter, removed=removed, granularity=granularity,
                                     batch_size=batch_size)
            require_finite(value, f"the calibration loss without blocks {removed}", model, adapter, ids, granularity)
            return value

        return loss

    def run(self, model, adapter, calibration, blocks, constraints, *, granularity, progress, samples, batch_size):
        ids = calibration.input_ids if samples is None else calibration.input_ids[:samples]
        measured = 0
        loss = self.loss if self.loss is not None else self.loss_meter(
            model, adapter, ids, granularity=granularity, batch_size=batch_size, progress=progress)

        def score(removed: list[int], allowed: list[int]) -> dict[int, float]:
            nonlocal measured
            inside = next((k for k in self.known if len(k) > len(removed) and k.issuperset(removed)), None)
            if inside is not None and not inside.isdisjoint(allowed):
                allowed = [i for i in allowed if i in inside]
            measured += len(allowed)
            return {i: loss(removed + [i]) for i in allowed}

        order, trace = greedy_order(constraints, score, on_step=step_logger(progress, self.name))
        return Selection([sorted(order)], [trace[-1]["score"]] if trace else None, order, trace,
                         {"samples": int(ids.shape[0]), "loss_measurements": measured,
                          "step_score": self.step_score})
