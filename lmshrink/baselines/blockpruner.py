"""BlockPruner-style removal (Zhong et al. 2024): split every decoder layer into its attention and MLP sub-layers
and, step by step, remove the sub-layer whose removal raises the calibration perplexity least.

It is the greedy of :mod:`.sleb` at sub-layer granularity, scored by perplexity

    PPL(S ∪ {i}) = exp( (1/n) Σ_w ℓ_w(S ∪ {i}) )                                                          (1)

(ℓ_w the mean next-token loss on calibration window w, :mod:`lmshrink.evaluate.measured`), so the steps and the
budget handling are sleb's (:func:`~.base.greedy_order`: counts per kind, and budgets in parameters filled up to
their band); what differs is the unit (sub-layers only) and the measurement, which starts each forward pass at
the first removed layer from the dense model's kept layer inputs (:class:`~lmshrink.evaluate.measured.RemovalLoss`).
Each step costs one pass per allowed sub-layer over the samples used.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..objectives.common import require_finite
from .sleb import GreedyLossRemoval


class BlockPrunerRemoval(GreedyLossRemoval):
    """Greedy sub-layer removal by measured calibration perplexity, recomputed after each removal."""

    name = "blockpruner"
    description = ("BlockPruner baseline: greedily remove the attention or MLP sub-layer whose removal raises the "
                   "calibration perplexity least.")
    granularities = ("sublayer",)
    step_score = "calibration perplexity with the sub-layer removed"

    def loss_meter(self, model: Any, adapter: Any, ids: Any, *, granularity: str, batch_size: int,
                   progress: bool) -> Callable[[list[int]], float]:
        """Perplexity (1) of the model with ``removed`` gated off, measured mid-stack on ``ids``."""
        from ..evaluate.measured import RemovalLoss

        meter = RemovalLoss(model, adapter, ids, granularity=granularity, batch_size=batch_size)

        def perplexity(removed: list[int]) -> float:
            loss = meter(removed).mean
            require_finite(loss, f"the calibration loss without blocks {removed}", model, adapter, ids, granularity)
            return math.exp(loss)

        return perplexity
